//! DINO's schedules, as functions of how far training has come.

/// Cosine from `start` (progress 0) to `end` (progress 1): `end + (start - end) (1 + cos(π p)) / 2`.
/// The teacher's momentum follows it from 0.996 to 1, the weight decay from 0.04 to 0.4.
/// Progress outside `[0, 1]` is clamped.
pub fn cosine(start: f64, end: f64, progress: f64) -> f64 {
    let p = progress.clamp(0.0, 1.0);
    end + (start - end) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

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
    fn momentum_schedule_hits_its_end_points() {
        assert_eq!(cosine(0.996, 1.0, 0.0), 0.996);
        assert_eq!(cosine(0.996, 1.0, 1.0), 1.0);
        assert!((cosine(0.996, 1.0, 0.5) - 0.998).abs() < 1e-12);
        // Monotone, and clamped outside [0, 1].
        let steps: Vec<f64> = (0..=10)
            .map(|i| cosine(0.996, 1.0, i as f64 / 10.0))
            .collect();
        assert!(steps.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(cosine(0.996, 1.0, 1.5), 1.0);
        assert_eq!(cosine(0.996, 1.0, -1.0), 0.996);
    }

    #[test]
    fn teacher_temperature_warms_up_then_holds() {
        assert_eq!(teacher_temperature(0.04, 0.07, 30.0, 0.0), 0.04);
        assert!((teacher_temperature(0.04, 0.07, 30.0, 15.0) - 0.055).abs() < 1e-12);
        assert_eq!(teacher_temperature(0.04, 0.07, 30.0, 30.0), 0.07);
        assert_eq!(teacher_temperature(0.04, 0.07, 30.0, 99.0), 0.07);
        assert_eq!(teacher_temperature(0.04, 0.07, 0.0, 0.0), 0.07);
    }
}
