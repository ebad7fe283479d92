//! Learning-rate and momentum schedules as pure functions of the step.

use crate::config::ScheduleConfig;

/// Linear warm-up from 0 to `base` over `warmup_steps`, then cosine decay to `base * final_ratio`
/// at `total_steps`.
pub fn warmup_cosine(
    step: usize,
    total_steps: usize,
    warmup_steps: usize,
    base: f64,
    final_ratio: f64,
) -> f64 {
    if step < warmup_steps {
        return base * (step + 1) as f64 / warmup_steps as f64;
    }
    let span = total_steps.saturating_sub(warmup_steps).max(1);
    let t = ((step - warmup_steps) as f64 / span as f64).min(1.0);
    let end = base * final_ratio;
    end + (base - end) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Cosine ramp from `start` (progress 0) to `end` (progress 1): DINO's teacher momentum.
pub fn cosine_ramp(progress: f64, start: f64, end: f64) -> f64 {
    let p = progress.clamp(0.0, 1.0);
    end - (end - start) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

/// The weight decay of `step` out of `total_steps`: a cosine from `base` (the optimizer's) to
/// `cfg.final_weight_decay` when that is set, else `None` (the optimizer's, constant). Like
/// DINO's `cosine_scheduler`, step `i` of `N` sits at `i / N` of the cosine, so the last step
/// is one step short of the final value (tested against it: `tests/golden.rs`).
pub fn weight_decay_at(
    cfg: &ScheduleConfig,
    base: f64,
    step: usize,
    total_steps: usize,
) -> Option<f64> {
    let end = cfg.final_weight_decay?;
    Some(cosine_ramp(
        step as f64 / total_steps.max(1) as f64,
        base,
        end,
    ))
}

/// The learning rate of a run, from its schedule config.
#[derive(Clone, Debug)]
pub struct LrSchedule {
    base: f64,
    final_ratio: f64,
    warmup_steps: usize,
    total_steps: usize,
}

impl LrSchedule {
    /// The schedule for `total_steps` steps of `steps_per_epoch` each.
    pub fn new(
        cfg: &ScheduleConfig,
        base: f64,
        steps_per_epoch: usize,
        total_steps: usize,
    ) -> Self {
        let warmup = (cfg.warmup_epochs * steps_per_epoch as f64).round() as usize;
        Self {
            base,
            final_ratio: cfg.final_lr_ratio,
            warmup_steps: warmup.min(total_steps),
            total_steps,
        }
    }

    /// Learning rate at `step`.
    pub fn lr(&self, step: usize) -> f64 {
        warmup_cosine(
            step,
            self.total_steps,
            self.warmup_steps,
            self.base,
            self.final_ratio,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        assert!((warmup_cosine(0, 100, 10, 1.0, 0.0) - 0.1).abs() < 1e-12);
        assert!((warmup_cosine(9, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(10, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(55, 100, 10, 1.0, 0.0) - 0.5).abs() < 1e-12);
        assert!((warmup_cosine(100, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn ramp_ends() {
        assert!((cosine_ramp(0.0, 0.996, 1.0) - 0.996).abs() < 1e-12);
        assert!((cosine_ramp(1.0, 0.996, 1.0) - 1.0).abs() < 1e-12);
        assert!((cosine_ramp(0.5, 0.0, 1.0) - 0.5).abs() < 1e-12);
        let mut cfg = ScheduleConfig::default();
        assert_eq!(weight_decay_at(&cfg, 0.04, 3, 10), None);
        cfg.final_weight_decay = Some(0.4);
        assert!((weight_decay_at(&cfg, 0.04, 0, 10).unwrap() - 0.04).abs() < 1e-12);
        assert!((weight_decay_at(&cfg, 0.04, 5, 10).unwrap() - 0.22).abs() < 1e-12);
        assert!((weight_decay_at(&cfg, 0.04, 10, 10).unwrap() - 0.4).abs() < 1e-12);
    }
}
