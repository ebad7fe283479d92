//! DINO's teacher-temperature warm-up. (The teacher's momentum follows
//! `selfsup_core::schedule::cosine_ramp` from 0.996 to 1, the weight decay the engine's
//! `train.schedule.final_weight_decay`.)

/// The teacher's temperature in epoch `epoch` (0-based): the reference's per-epoch
/// `np.linspace(start, end, warmup_epochs)` for the first `warmup_epochs` epochs, then `end`
/// (the paper: 0.04 to 0.07 over 30 epochs; a teacher too soft at the start makes training
/// unstable). The warm-up's last epoch already reaches `end`; a one-epoch warm-up is `start`
/// for that epoch.
pub fn teacher_temperature(start: f64, end: f64, warmup_epochs: usize, epoch: usize) -> f64 {
    match warmup_epochs {
        w if epoch >= w => end,
        1 => start,
        w => start + (end - start) * epoch as f64 / (w - 1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teacher_temperature_warms_up_then_holds() {
        assert_eq!(teacher_temperature(0.04, 0.07, 31, 0), 0.04);
        assert!((teacher_temperature(0.04, 0.07, 31, 15) - 0.055).abs() < 1e-12);
        assert_eq!(teacher_temperature(0.04, 0.07, 31, 30), 0.07);
        assert_eq!(teacher_temperature(0.04, 0.07, 31, 99), 0.07);
        assert_eq!(teacher_temperature(0.04, 0.07, 0, 0), 0.07);
        assert_eq!(teacher_temperature(0.04, 0.07, 1, 0), 0.04);
        assert_eq!(teacher_temperature(0.04, 0.07, 1, 1), 0.07);
    }
}
