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

#[cfg(test)]
mod tests {
    use super::*;

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
