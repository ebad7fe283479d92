//! Exponential moving average of a network: the teacher of DINO-style methods.

use crate::{Error, Result};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use std::path::Path;

/// A teacher network that follows a student by `teacher = m * teacher + (1 - m) * student`.
///
/// Built from a *fresh* module loaded with the student's record, never by `clone()`: in burn a
/// clone shares lazy initialization and BatchNorm running state with the original.
/// The teacher's parameters never receive gradients. It lives on the device of the fresh
/// module: a plain device, or the student's autodiff one, where its untracked operations record
/// no graph and its BatchNorm layers normalize with the batch's statistics, as a teacher in
/// training mode does (DINO's).
pub struct Ema<M: Module> {
    teacher: M,
}

struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let v = param.val().detach();
        let n = v.shape().num_elements();
        self.0.push(v.reshape([n]));
    }
}

struct Blend {
    student: std::vec::IntoIter<Tensor<1>>,
    momentum: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let s = self
            .student
            .next()
            .expect("teacher and student have the same parameters");
        param.map(|t| {
            let shape = t.shape();
            let s: Tensor<D> = s.to_device(&t.device()).reshape(shape);
            t.mul_scalar(self.momentum)
                .add(s.mul_scalar(1.0 - self.momentum))
        })
    }
}

impl<M: Module> Ema<M> {
    /// A teacher with the student's current weights. `fresh` is a newly built module of the
    /// same architecture on the teacher's device.
    pub fn new(fresh: M, student: &M) -> Self {
        let device = fresh.devices().into_iter().next();
        let record = student.valid().into_record();
        let mut teacher = fresh.load_record(record);
        if let Some(device) = device {
            teacher = teacher.to_device(&device);
        }
        Self {
            teacher: teacher.no_grad(),
        }
    }

    /// Moves the teacher towards the student: `t <- m t + (1 - m) s`.
    pub fn update(&mut self, student: &M, momentum: f64) {
        let mut c = Collect(Vec::new());
        // `valid()` syncs BatchNorm running statistics before they are read.
        student.valid().visit(&mut c);
        let mut blend = Blend {
            student: c.0.into_iter(),
            momentum,
        };
        let teacher = self.teacher.clone();
        self.teacher = teacher.map(&mut blend);
    }

    /// The teacher network.
    pub fn teacher(&self) -> &M {
        &self.teacher
    }

    /// Writes the teacher's weights to `path` (a checkpoint's, for resuming).
    pub fn save_file(&self, path: &Path) -> Result<()> {
        self.teacher
            .valid()
            .save_file(path)
            .map_err(|e| Error::checkpoint(path, e.to_string()))
    }

    /// Replaces the teacher's weights with those [`Ema::save_file`] wrote, on the teacher's
    /// device.
    pub fn load_file(&mut self, path: &Path) -> Result<()> {
        let device = self.teacher.devices().into_iter().next();
        // The old teacher is dropped: nothing shares state with the loaded one.
        let mut teacher = self
            .teacher
            .clone()
            .try_load_file(path)
            .map_err(|e| Error::checkpoint(path, e.to_string()))?;
        if let Some(device) = device {
            teacher = teacher.to_device(&device);
        }
        self.teacher = teacher.no_grad();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Device;

    fn weight(l: &Linear) -> Vec<f32> {
        l.weight.val().into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn teacher_starts_equal_and_moves_by_momentum() {
        let dev = Device::flex();
        let student = crate::seed::init_module(&dev, 1, |d| LinearConfig::new(2, 2).init(d));
        let mut ema = Ema::new(
            crate::seed::init_module(&dev, 2, |d| LinearConfig::new(2, 2).init(d)),
            &student,
        );
        assert_eq!(weight(ema.teacher()), weight(&student));
        let moved = student.clone().map(&mut Blend {
            student: vec![Tensor::<1>::ones([4], &dev), Tensor::<1>::ones([2], &dev)].into_iter(),
            momentum: 0.0,
        });
        let before = weight(ema.teacher());
        ema.update(&moved, 0.75);
        let after = weight(ema.teacher());
        for (a, b) in after.iter().zip(&before) {
            assert!((a - (0.75 * b + 0.25)).abs() < 1e-6);
        }
        // The student is untouched by teacher updates.
        assert_eq!(weight(&student), before);
    }
}
