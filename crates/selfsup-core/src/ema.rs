//! Exponential moving average of a network: the teacher of DINO-style methods.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// A teacher network that follows a student by `teacher = m * teacher + (1 - m) * student`.
///
/// Built from a *fresh* module loaded with the student's record, never by `clone()`: in burn a
/// clone shares lazy initialization and BatchNorm running state with the original.
/// The teacher lives without autodiff; its parameters never receive gradients.
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
    /// same architecture on the teacher's (plain, non-autodiff) device.
    pub fn new(fresh: M, student: &M) -> Self {
        let record = student.valid().into_record();
        let teacher = fresh.load_record(record).no_grad();
        Self { teacher }
    }

    /// Moves the teacher towards the student: `t <- m t + (1 - m) s`.
    pub fn update(&mut self, student: &M, momentum: f64) {
        let mut c = Collect(Vec::new());
        student.visit(&mut c);
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
}
