//! DINO's teacher-temperature warm-up. (The teacher's momentum follows
//! `selfsup_core::schedule::cosine_ramp` from 0.996 to 1, the weight decay the engine's
//! `train.schedule.final_weight_decay`.)

/// The teacher's temperature at `epoch` (fractional): linear from `start` to `end` over the
/// first `warmup_epochs`, then `end` (the paper: 0.04 to 0.07 over 30 epochs; a teacher too
/// soft at the start makes training unstable).
pub fn teacher_temperature(start: f64, end: f64, warmup_epochs: f64, epoch: f64) -> f64 {
    if warmup_epochs <= 0.0 || epoch >= warmup_epochs {
        end
    } else {
        start + (end - start) * (epoch.max(0.0) / warmup_epochs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teacher_temperature_warms_up_then_holds() {
        assert_eq!(teacher_temperature(0.04, 0.07, 30.0, 0.0), 0.04);
        assert!((teacher_temperature(0.04, 0.07, 30.0, 15.0) - 0.055).abs() < 1e-12);
        assert_eq!(teacher_temperature(0.04, 0.07, 30.0, 30.0), 0.07);
        assert_eq!(teacher_temperature(0.04, 0.07, 30.0, 99.0), 0.07);
        assert_eq!(teacher_temperature(0.04, 0.07, 0.0, 0.0), 0.07);
    }
}
