//! Deterministic random numbers keyed by what they are for, not by when they are drawn.
//!
//! A deviate is a pure function of a 64-bit key (seed, worker, step mixed together), so the
//! order in which the simulator processes events cannot change a run's randomness.

/// SplitMix64 (Steele, Lea & Flood 2014): a fast, well-mixed 64-bit hash.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform deviate in (0, 1) from `key`.
pub fn uniform(key: u64) -> f64 {
    // 53 random bits, shifted away from 0.
    ((splitmix64(key) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A standard normal deviate from `key` (Box-Muller).
pub fn normal(key: u64) -> f64 {
    let u1 = uniform(key);
    let u2 = uniform(key ^ 0xD1B5_4A32_D192_ED03);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Whether `now` falls in one of the episodes of the sequence keyed by `key`: episodes of
/// `duration` separated by exponential gaps of mean `every` (the first gap counted from 0).
/// A pure function of its arguments, so it does not matter when or how often it is asked.
pub fn in_episode(
    key: u64,
    every: topolab_core::units::Time,
    duration: topolab_core::units::Time,
    now: topolab_core::units::Time,
) -> bool {
    let (every, duration, now) = (every.0 as f64, duration.0 as f64, now.0 as f64);
    let mut start = 0.0;
    for k in 0u64.. {
        start += -every * uniform(key ^ k.wrapping_mul(0xA24B_AED4_963E_E407)).ln();
        if now < start {
            return false;
        }
        if now < start + duration {
            return true;
        }
        start += duration;
    }
    unreachable!("the loop returns once an episode starts after `now`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episodes_cover_their_share_of_the_time() {
        // Episodes of 10 s every 30 s on average: a quarter of the time (10 / (30 + 10)).
        use topolab_core::units::Time;
        let (every, duration) = (Time(30_000_000_000), Time(10_000_000_000));
        let n = 100_000u64;
        let inside = (0..n).filter(|&i| in_episode(42, every, duration, Time(i * 1_000_000_000))).count();
        let share = inside as f64 / n as f64;
        assert!((share - 0.25).abs() < 0.02, "share {share}");
    }

    #[test]
    fn normal_deviates_have_unit_variance() {
        let n = 200_000u64;
        let xs: Vec<f64> = (0..n).map(normal).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }
}
