//! Quantities with units: simulated time, bytes, bit rates, FLOP counts and FLOP rates.
//!
//! Scenarios write every quantity with its unit (`"10 Gbit/s"`, `"50 us"`, `"95 MiB"`,
//! `"4.29 TFLOP/s"`); a bare number where a unit is required is an error that shows an accepted
//! example. Each type prints in the same notation it parses, so a normalized scenario reads back
//! to the same values.
//!
//! Time is an integer count of nanoseconds ([`Time`]): the simulator's clock never drifts and
//! equal timestamps compare equal. Rates are `f64` because they are divided, not accumulated.

use std::fmt;
use std::ops::{Add, AddAssign, Mul, Sub};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a quantity did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text has a number but no unit.
    #[error("`{text}` has no unit; write it with one, e.g. \"{example}\" (units: {units})")]
    MissingUnit {
        /// The offending text.
        text: String,
        /// An accepted example of this quantity.
        example: &'static str,
        /// The accepted units, comma separated.
        units: String,
    },
    /// The unit is not one this quantity accepts.
    #[error("`{unit}` is not a unit of {quantity}; accepted units: {units} (e.g. \"{example}\")")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The kind of quantity, e.g. "time".
        quantity: &'static str,
        /// The accepted units, comma separated.
        units: String,
        /// An accepted example.
        example: &'static str,
    },
    /// The number part is not a finite, non-negative number.
    #[error("`{text}` is not a non-negative number with a unit, e.g. \"{example}\"")]
    BadNumber {
        /// The offending text.
        text: String,
        /// An accepted example.
        example: &'static str,
    },
    /// The value does not fit the type (e.g. more than 584 years of nanoseconds).
    #[error("`{text}` is too large")]
    TooLarge {
        /// The offending text.
        text: String,
    },
}

/// Splits `"10 Gbit/s"` into `(10.0, "Gbit/s")`; the unit may follow without a space.
fn split_quantity(text: &str) -> Option<(f64, &str)> {
    let t = text.trim();
    let end = t
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || c == '.' || c == '_' || c == 'e' || c == 'E' || c == '+' || c == '-'))
        .map(|(i, _)| i)
        .unwrap_or(t.len());
    // An exponent letter directly followed by a unit letter ("5e" in "5 eb") is not a number:
    // back off to the longest prefix that parses.
    let mut cut = end;
    while cut > 0 {
        let num: String = t[..cut].chars().filter(|&c| c != '_').collect();
        if let Ok(v) = num.parse::<f64>() {
            return Some((v, t[cut..].trim()));
        }
        cut -= 1;
    }
    None
}

/// Parses `text` as a number times one of `units` (suffix, factor).
fn parse_with(
    text: &str,
    units: &[(&str, f64)],
    quantity: &'static str,
    example: &'static str,
) -> Result<f64, UnitError> {
    let list = || {
        let mut seen: Vec<&str> = Vec::new();
        for (u, _) in units {
            if !seen.contains(u) {
                seen.push(u);
            }
        }
        seen.join(", ")
    };
    let Some((value, unit)) = split_quantity(text) else {
        return Err(UnitError::BadNumber { text: text.to_string(), example });
    };
    if !value.is_finite() || value < 0.0 {
        return Err(UnitError::BadNumber { text: text.to_string(), example });
    }
    if unit.is_empty() {
        return Err(UnitError::MissingUnit { text: text.to_string(), example, units: list() });
    }
    match units.iter().find(|(u, _)| *u == unit) {
        Some((_, factor)) => Ok(value * factor),
        None => Err(UnitError::UnknownUnit { unit: unit.to_string(), quantity, units: list(), example }),
    }
}

/// Formats `value` (already divided by the unit's factor) with at most `max_decimals`, trimming
/// trailing zeros.
fn trimmed(value: f64, max_decimals: usize) -> String {
    let s = format!("{value:.max_decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// Picks the largest display unit whose factor is <= `value` (or the smallest one).
fn display_unit(value: f64, units: &[(&'static str, f64)]) -> (&'static str, f64) {
    let mut best = units[0];
    for &(u, f) in units {
        if value >= f {
            best = (u, f);
        }
    }
    best
}

/// Formats with `precision` decimals if given, else 6 significant digits.
fn format_scaled(f: &mut fmt::Formatter<'_>, value: f64, units: &[(&'static str, f64)]) -> fmt::Result {
    let (u, factor) = display_unit(value, units);
    let v = value / factor;
    let text = match f.precision() {
        Some(p) => format!("{v:.p$}"),
        None => {
            // Six significant digits: enough to round-trip every catalogue number.
            let int_digits = if v >= 1.0 { (v.log10().floor() as usize) + 1 } else { 1 };
            trimmed(v, 6usize.saturating_sub(int_digits))
        }
    };
    write!(f, "{text} {u}")
}

macro_rules! string_serde {
    ($ty:ident, $example:expr, $desc:expr, $pattern:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a string with a unit, e.g. \"{}\"", $example)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(|e: UnitError| E::custom(e))
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$ty, E> {
                        Err(E::custom(format!(
                            "bare number {v} has no unit; write it as a string with a unit, e.g. \"{}\"",
                            $example
                        )))
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$ty, E> {
                        self.visit_i64(v as i64)
                    }
                    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<$ty, E> {
                        Err(E::custom(format!(
                            "bare number {v} has no unit; write it as a string with a unit, e.g. \"{}\"",
                            $example
                        )))
                    }
                }
                d.deserialize_any(V)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "description": $desc,
                    "pattern": $pattern,
                    "examples": [$example],
                })
            }
        }
    };
}

const TIME_UNITS: &[(&str, f64)] =
    &[("ns", 1.0), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9), ("min", 60e9), ("h", 3600e9), ("d", 86400e9)];
const TIME_DISPLAY: &[(&str, f64)] = &[("ns", 1.0), ("us", 1e3), ("ms", 1e6), ("s", 1e9)];

/// A span of simulated or measured time, in integer nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub u64);

impl Time {
    /// Zero time.
    pub const ZERO: Time = Time(0);
    /// From nanoseconds.
    pub const fn from_ns(ns: u64) -> Self {
        Time(ns)
    }
    /// From seconds (rounded to the nearest nanosecond; saturates).
    pub fn from_secs_f64(s: f64) -> Self {
        Time((s * 1e9).round().clamp(0.0, u64::MAX as f64) as u64)
    }
    /// Nanoseconds.
    pub const fn ns(self) -> u64 {
        self.0
    }
    /// Seconds as a float.
    pub fn secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
    /// Difference, zero if `other` is later.
    pub fn saturating_sub(self, other: Time) -> Time {
        Time(self.0.saturating_sub(other.0))
    }
}

impl std::str::FromStr for Time {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let ns = parse_with(s, TIME_UNITS, "time", "50 us")?;
        if ns >= u64::MAX as f64 {
            return Err(UnitError::TooLarge { text: s.to_string() });
        }
        // Exact path for plain decimals: f64 cannot hold every nanosecond count above 2^53.
        if let Some(exact) = exact_time(s) {
            return Ok(Time(exact));
        }
        Ok(Time(ns.round() as u64))
    }
}

/// Parses `"<digits>[.<digits>] <unit>"` exactly in integer arithmetic; `None` if the text
/// has another shape (exponent, unknown unit) or overflows.
fn exact_time(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = (&t[..split], t[split..].trim());
    let factor: u64 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return None,
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = int.checked_mul(factor)?;
    let mut scale = factor;
    for d in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        total = total.checked_add(u64::from(d - b'0') * scale)?;
    }
    Some(total)
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.precision().is_some() {
            return format_scaled(f, self.0 as f64, TIME_DISPLAY);
        }
        // Exact: the largest unit that keeps the value exact in at most 9 decimals.
        let (u, factor) = display_unit(self.0 as f64, TIME_DISPLAY);
        let factor = factor as u64;
        let whole = self.0 / factor;
        let frac = self.0 % factor;
        if frac == 0 {
            write!(f, "{whole} {u}")
        } else {
            let digits = factor.ilog10() as usize;
            let frac = format!("{frac:0digits$}");
            write!(f, "{whole}.{} {u}", frac.trim_end_matches('0'))
        }
    }
}

impl Add for Time {
    type Output = Time;
    fn add(self, o: Time) -> Time {
        Time(self.0 + o.0)
    }
}
impl AddAssign for Time {
    fn add_assign(&mut self, o: Time) {
        self.0 += o.0;
    }
}
impl Sub for Time {
    type Output = Time;
    fn sub(self, o: Time) -> Time {
        Time(self.0 - o.0)
    }
}
string_serde!(
    Time,
    "50 us",
    "A time with a unit: ns, us, ms, s, min, h, d.",
    r"^\s*[0-9.eE+_]+\s*(ns|us|µs|ms|s|min|h|d)\s*$"
);

const BYTE_UNITS: &[(&str, f64)] = &[
    ("B", 1.0),
    ("kB", 1e3),
    ("KB", 1e3),
    ("MB", 1e6),
    ("GB", 1e9),
    ("TB", 1e12),
    ("KiB", 1024.0),
    ("MiB", 1048576.0),
    ("GiB", 1073741824.0),
    ("TiB", 1099511627776.0),
];

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl Bytes {
    /// Bytes as a float.
    pub fn as_f64(self) -> f64 {
        self.0 as f64
    }
}

impl std::str::FromStr for Bytes {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let b = parse_with(s, BYTE_UNITS, "bytes", "95 MiB")?;
        if b >= u64::MAX as f64 {
            return Err(UnitError::TooLarge { text: s.to_string() });
        }
        Ok(Bytes(b.round() as u64))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Exact binary multiples print in binary units ("95 MiB"); everything else decimal.
        if f.precision().is_none() && self.0 > 0 {
            for (u, factor) in [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
                if self.0.is_multiple_of(factor) {
                    return write!(f, "{} {u}", self.0 / factor);
                }
            }
            for (u, factor) in [("TB", 1_000_000_000_000u64), ("GB", 1_000_000_000), ("MB", 1_000_000), ("kB", 1_000)] {
                if self.0 >= factor && self.0.checked_mul(1000).is_some_and(|x| x.is_multiple_of(factor)) {
                    return write!(f, "{}", trimmed(self.0 as f64 / factor as f64, 3) + " " + u);
                }
            }
            // Exact, if not pretty: a scenario printed back must parse to the same value.
            return write!(f, "{} B", self.0);
        }
        format_scaled(f, self.0 as f64, &[("B", 1.0), ("kB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12)])
    }
}

impl Add for Bytes {
    type Output = Bytes;
    fn add(self, o: Bytes) -> Bytes {
        Bytes(self.0 + o.0)
    }
}
impl AddAssign for Bytes {
    fn add_assign(&mut self, o: Bytes) {
        self.0 += o.0;
    }
}
impl Mul<u64> for Bytes {
    type Output = Bytes;
    fn mul(self, k: u64) -> Bytes {
        Bytes(self.0 * k)
    }
}
impl std::iter::Sum for Bytes {
    fn sum<I: Iterator<Item = Bytes>>(it: I) -> Bytes {
        Bytes(it.map(|b| b.0).sum())
    }
}
string_serde!(
    Bytes,
    "95 MiB",
    "A size with a unit: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB.",
    r"^\s*[0-9.eE+_]+\s*(B|[kKMGT]B|[KMGT]iB)\s*$"
);

const BITRATE_UNITS: &[(&str, f64)] = &[
    ("bit/s", 1.0),
    ("kbit/s", 1e3),
    ("Mbit/s", 1e6),
    ("Gbit/s", 1e9),
    ("Tbit/s", 1e12),
    ("Gbps", 1e9),
    ("Mbps", 1e6),
    ("B/s", 8.0),
    ("kB/s", 8e3),
    ("MB/s", 8e6),
    ("GB/s", 8e9),
    ("TB/s", 8e12),
    ("MiB/s", 8.0 * 1048576.0),
    ("GiB/s", 8.0 * 1073741824.0),
];

/// A data rate, in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct BitRate(pub f64);

impl BitRate {
    /// From bits per second.
    pub fn bits_per_sec(bps: f64) -> Self {
        BitRate(bps)
    }
    /// From bytes per second.
    pub fn from_bytes_per_sec(bps: f64) -> Self {
        BitRate(bps * 8.0)
    }
    /// Bytes per second.
    pub fn bytes_per_sec(self) -> f64 {
        self.0 / 8.0
    }
    /// Time to move `bytes` at this rate (rounded up to whole nanoseconds).
    pub fn transfer_time(self, bytes: Bytes) -> Time {
        Time((bytes.0 as f64 * 8.0 / self.0 * 1e9).ceil() as u64)
    }
}

impl std::str::FromStr for BitRate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        Ok(BitRate(parse_with(s, BITRATE_UNITS, "data rate", "10 Gbit/s")?))
    }
}

impl fmt::Display for BitRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_scaled(f, self.0, &[("bit/s", 1.0), ("kbit/s", 1e3), ("Mbit/s", 1e6), ("Gbit/s", 1e9), ("Tbit/s", 1e12)])
    }
}
string_serde!(
    BitRate,
    "10 Gbit/s",
    "A data rate with a unit: bit/s, kbit/s, Mbit/s, Gbit/s, Tbit/s, or bytes: B/s, MB/s, GB/s, TB/s, MiB/s, GiB/s.",
    r"^\s*[0-9.eE+_]+\s*([kMGT]?bit/s|[MG]bps|[kMGT]?B/s|[MG]iB/s)\s*$"
);

/// Parses a byte rate for display in memory-bandwidth terms ("288 GB/s").
pub struct ByteRate(pub BitRate);
impl fmt::Display for ByteRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_scaled(
            f,
            self.0.bytes_per_sec(),
            &[("B/s", 1.0), ("kB/s", 1e3), ("MB/s", 1e6), ("GB/s", 1e9), ("TB/s", 1e12)],
        )
    }
}

const FLOP_UNITS: &[(&str, f64)] =
    &[("FLOP", 1.0), ("kFLOP", 1e3), ("MFLOP", 1e6), ("GFLOP", 1e9), ("TFLOP", 1e12), ("PFLOP", 1e15)];

/// A count of floating-point operations (one multiply-add is two FLOP).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Flops(pub f64);

impl std::str::FromStr for Flops {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        Ok(Flops(parse_with(s, FLOP_UNITS, "FLOP count", "11.4 GFLOP")?))
    }
}
impl fmt::Display for Flops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_scaled(f, self.0, FLOP_UNITS)
    }
}
string_serde!(
    Flops,
    "11.4 GFLOP",
    "A FLOP count with a unit: FLOP, kFLOP, MFLOP, GFLOP, TFLOP, PFLOP.",
    r"^\s*[0-9.eE+_]+\s*[kMGTP]?FLOP\s*$"
);

const FLOPRATE_UNITS: &[(&str, f64)] =
    &[("FLOP/s", 1.0), ("kFLOP/s", 1e3), ("MFLOP/s", 1e6), ("GFLOP/s", 1e9), ("TFLOP/s", 1e12), ("PFLOP/s", 1e15)];

/// A compute rate, in FLOP per second.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct FlopRate(pub f64);

impl FlopRate {
    /// Time to perform `flops` at this rate (rounded up to whole nanoseconds).
    pub fn compute_time(self, flops: f64) -> Time {
        Time((flops / self.0 * 1e9).ceil() as u64)
    }
}

impl std::str::FromStr for FlopRate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        Ok(FlopRate(parse_with(s, FLOPRATE_UNITS, "FLOP rate", "4.29 TFLOP/s")?))
    }
}
impl fmt::Display for FlopRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_scaled(f, self.0, FLOPRATE_UNITS)
    }
}
string_serde!(
    FlopRate,
    "4.29 TFLOP/s",
    "A compute rate with a unit: FLOP/s, GFLOP/s, TFLOP/s, PFLOP/s.",
    r"^\s*[0-9.eE+_]+\s*[kMGTP]?FLOP/s\s*$"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issue_examples() {
        assert_eq!("10 Gbit/s".parse::<BitRate>().unwrap().0, 10e9);
        // 1.25 GB/s is 1.25e9 bytes/s = 10e9 bit/s.
        assert_eq!("1.25 GB/s".parse::<BitRate>().unwrap().0, 10e9);
        assert_eq!("50 us".parse::<Time>().unwrap(), Time(50_000));
        assert_eq!("2 ms".parse::<Time>().unwrap(), Time(2_000_000));
        assert_eq!("95 MiB".parse::<Bytes>().unwrap(), Bytes(95 * 1024 * 1024));
        assert_eq!("4.29 TFLOP/s".parse::<FlopRate>().unwrap().0, 4.29e12);
        assert_eq!("1.5h".parse::<Time>().unwrap(), Time(5_400_000_000_000));
    }

    #[test]
    fn prints_in_the_notation_it_parses() {
        assert_eq!(BitRate(10e9).to_string(), "10 Gbit/s");
        assert_eq!(Time(50_000).to_string(), "50 us");
        assert_eq!(Time(2_000_000).to_string(), "2 ms");
        assert_eq!(Time(1_234_567).to_string(), "1.234567 ms");
        assert_eq!(Bytes(95 * 1024 * 1024).to_string(), "95 MiB");
        assert_eq!(Bytes(1_500_000).to_string(), "1.5 MB");
        assert_eq!(FlopRate(4.29e12).to_string(), "4.29 TFLOP/s");
        assert_eq!(format!("{:.1}", Time(1_260_000)), "1.3 ms");
        assert_eq!(ByteRate(BitRate::from_bytes_per_sec(288e9)).to_string(), "288 GB/s");
    }

    #[test]
    fn a_bare_number_is_an_error_with_an_example() {
        let e = "10".parse::<BitRate>().unwrap_err().to_string();
        assert!(e.contains("no unit") && e.contains("10 Gbit/s"), "{e}");
        let e = "10 parsecs".parse::<Time>().unwrap_err().to_string();
        assert!(e.contains("not a unit of time") && e.contains("ms"), "{e}");
        assert!("-5 ms".parse::<Time>().is_err());
        assert!("ms".parse::<Time>().is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { rng_seed: proptest::test_runner::RngSeed::Fixed(0x7090_1ab5), ..Default::default() })]

        #[test]
        fn time_round_trips(ns in 0u64..u64::MAX / 2) {
            let t = Time(ns);
            proptest::prop_assert_eq!(t.to_string().parse::<Time>().unwrap(), t);
        }

        #[test]
        fn bytes_round_trip_binary(k in 1u64..1_000_000, shift in 0u32..30) {
            let b = Bytes(k << shift);
            proptest::prop_assert_eq!(b.to_string().parse::<Bytes>().unwrap(), b);
        }
    }
}
