//! Newtypes for the units a task spec carries, parsed strictly.
//!
//! Sizes follow Kubernetes quantities: `k`/`K`, `M`, `G`, `T` are powers of
//! 1000 and `Ki`, `Mi`, `Gi`, `Ti` powers of 1024; a bare number is bytes.
//! CPUs are a decimal count (`0.5`, `2`) or millicpus (`500m`). Durations
//! are one or more `<integer><unit>` groups with units `ms`, `s`, `m`, `h`
//! (`30s`, `1h30m`). Anything else is refused with the reason.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Why a unit string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{input}`: {reason}")]
pub struct UnitError {
    kind: &'static str,
    input: String,
    reason: String,
}

impl UnitError {
    fn new(kind: &'static str, input: &str, reason: impl Into<String>) -> Self {
        Self { kind, input: input.to_owned(), reason: reason.into() }
    }
}

/// Splits `"1.5Gi"` into `("1.5", "Gi")`.
fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    s.split_at(end)
}

/// Parses a non-negative decimal into (integer part, fraction digits).
fn parse_decimal(kind: &'static str, input: &str, num: &str) -> Result<(u128, u128, u32), UnitError> {
    if num.is_empty() {
        return Err(UnitError::new(kind, input, "expected a number first"));
    }
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() || (num.contains('.') && frac.is_empty()) || frac.contains('.') {
        return Err(UnitError::new(kind, input, "malformed number"));
    }
    if int.len() > 20 || frac.len() > 9 {
        return Err(UnitError::new(kind, input, "number too long"));
    }
    let i: u128 = int.parse().map_err(|_| UnitError::new(kind, input, "malformed number"))?;
    let f: u128 =
        if frac.is_empty() { 0 } else { frac.parse().map_err(|_| UnitError::new(kind, input, "malformed number"))? };
    Ok((i, f, frac.len() as u32))
}

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl Bytes {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;

    pub const fn mib(n: u64) -> Self {
        Self(n * Self::MIB)
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl FromStr for Bytes {
    type Err = UnitError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "size";
        let s = input.trim();
        let (num, unit) = split_number(s);
        let (int, frac, frac_digits) = parse_decimal(KIND, input, num)?;
        let mult: u128 = match unit {
            "" => 1,
            "k" | "K" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            other => {
                return Err(UnitError::new(
                    KIND,
                    input,
                    format!("unknown unit `{other}` (use k, M, G, T, Ki, Mi, Gi or Ti)"),
                ));
            }
        };
        let scale = 10u128.pow(frac_digits);
        let total = int * mult + frac * mult / scale;
        if frac_digits > 0 && !(frac * mult).is_multiple_of(scale) {
            return Err(UnitError::new(KIND, input, "not a whole number of bytes"));
        }
        u64::try_from(total).map(Bytes).map_err(|_| UnitError::new(KIND, input, "too large"))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, size) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if b >= size && b.is_multiple_of(size) {
                return write!(f, "{}{unit}", b / size);
            }
        }
        write!(f, "{b}")
    }
}

/// CPU time share in thousandths of a CPU (`500m` = half a CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MilliCpu(pub u32);

impl MilliCpu {
    /// The most a task may ask for: 4096 CPUs.
    pub const MAX: MilliCpu = MilliCpu(4_096_000);

    pub const fn get(self) -> u32 {
        self.0
    }

    /// The CFS quota for a period, in microseconds.
    pub fn quota_us(self, period_us: u64) -> u64 {
        u64::from(self.0) * period_us / 1000
    }
}

impl FromStr for MilliCpu {
    type Err = UnitError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "cpu count";
        let s = input.trim();
        let (num, unit) = split_number(s);
        let (int, frac, digits) = parse_decimal(KIND, input, num)?;
        let milli = match unit {
            "" => {
                let scale = 10u128.pow(digits);
                if (frac * 1000) % scale != 0 {
                    return Err(UnitError::new(KIND, input, "finer than a millicpu"));
                }
                int * 1000 + frac * 1000 / scale
            }
            "m" if digits == 0 => int,
            "m" => return Err(UnitError::new(KIND, input, "millicpus are whole numbers")),
            other => {
                return Err(UnitError::new(
                    KIND,
                    input,
                    format!("unknown unit `{other}` (use a count such as `0.5` or millicpus such as `500m`)"),
                ));
            }
        };
        if milli == 0 {
            return Err(UnitError::new(KIND, input, "must be more than zero"));
        }
        if milli > u128::from(Self::MAX.0) {
            return Err(UnitError::new(KIND, input, "more than 4096 CPUs"));
        }
        Ok(MilliCpu(milli as u32))
    }
}

impl fmt::Display for MilliCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) { write!(f, "{}", self.0 / 1000) } else { write!(f, "{}m", self.0) }
    }
}

/// A duration written the way people write them (`30s`, `1h30m`, `250ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = UnitError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "duration";
        let mut rest = input.trim();
        if rest.is_empty() {
            return Err(UnitError::new(KIND, input, "empty"));
        }
        let mut total_ms: u128 = 0;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(UnitError::new(KIND, input, "expected a whole number before each unit"));
            }
            if digits > 12 {
                return Err(UnitError::new(KIND, input, "too large"));
            }
            let (n, tail) = rest.split_at(digits);
            let n: u128 = n.parse().map_err(|_| UnitError::new(KIND, input, "malformed number"))?;
            let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let ms = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "" => {
                    return Err(UnitError::new(KIND, input, "missing unit (use ms, s, m or h, e.g. `30s`)"));
                }
                other => {
                    return Err(UnitError::new(KIND, input, format!("unknown unit `{other}` (use ms, s, m or h)")));
                }
            };
            total_ms += n * ms;
            rest = tail;
        }
        if total_ms == 0 {
            return Err(UnitError::new(KIND, input, "must be more than zero"));
        }
        let ms = u64::try_from(total_ms).map_err(|_| UnitError::new(KIND, input, "too large"))?;
        Ok(HumanDuration(Duration::from_millis(ms)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) { write!(f, "{ms}ms") } else { write!(f, "{}s", ms / 1000) }
    }
}

/// Serde for the unit newtypes: written as strings, read from strings (or,
/// for sizes and CPUs, plain numbers).
macro_rules! unit_serde {
    ($ty:ty, $expecting:literal, $from_u64:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        let f: fn(u64) -> Result<$ty, UnitError> = $from_u64;
                        f(v).map_err(E::custom)
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        match u64::try_from(v) {
                            Ok(v) => self.visit_u64(v),
                            Err(_) => Err(E::custom(format!("`{v}` is negative"))),
                        }
                    }
                    fn visit_f64<E: de::Error>(self, v: f64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

unit_serde!(Bytes, "a size such as `64Mi` or `1G`", |v| Ok(Bytes(v)));
unit_serde!(MilliCpu, "a cpu count such as `0.5` or `500m`", |v| v.to_string().parse());
unit_serde!(HumanDuration, "a duration such as `30s` or `1h30m`", |v| Err(UnitError::new(
    "duration",
    &v.to_string(),
    "missing unit (use ms, s, m or h, e.g. `30s`)"
)));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_strictly() {
        assert_eq!("64M".parse::<Bytes>().unwrap(), Bytes(64_000_000));
        assert_eq!("64Mi".parse::<Bytes>().unwrap(), Bytes(64 << 20));
        assert_eq!("1Gi".parse::<Bytes>().unwrap(), Bytes(1 << 30));
        assert_eq!("1.5Gi".parse::<Bytes>().unwrap(), Bytes(3 << 29));
        assert_eq!("4096".parse::<Bytes>().unwrap(), Bytes(4096));
        assert_eq!("512k".parse::<Bytes>().unwrap(), Bytes(512_000));
        for bad in ["", "M", "64X", "64mb", "-1", "1..5G", "1.G", "0.1", "99999999999999999999Ti", "6 4M"] {
            assert!(bad.parse::<Bytes>().is_err(), "{bad:?} should be refused");
        }
        let err = "64X".parse::<Bytes>().unwrap_err().to_string();
        assert!(err.contains("`64X`") && err.contains("unknown unit `X`"), "{err}");
    }

    #[test]
    fn cpus_parse_strictly() {
        assert_eq!("0.5".parse::<MilliCpu>().unwrap(), MilliCpu(500));
        assert_eq!("2".parse::<MilliCpu>().unwrap(), MilliCpu(2000));
        assert_eq!("250m".parse::<MilliCpu>().unwrap(), MilliCpu(250));
        assert_eq!("1.25".parse::<MilliCpu>().unwrap(), MilliCpu(1250));
        for bad in ["0", "0m", "0.0001", "1.5m", "two", "-1", "5000", "1c"] {
            assert!(bad.parse::<MilliCpu>().is_err(), "{bad:?} should be refused");
        }
        assert_eq!(MilliCpu(500).quota_us(100_000), 50_000);
        assert_eq!(MilliCpu(1500).to_string(), "1500m");
    }

    #[test]
    fn durations_parse_strictly() {
        assert_eq!("30s".parse::<HumanDuration>().unwrap().get(), Duration::from_secs(30));
        assert_eq!("1h30m".parse::<HumanDuration>().unwrap().get(), Duration::from_secs(5400));
        assert_eq!("250ms".parse::<HumanDuration>().unwrap().get(), Duration::from_millis(250));
        for bad in ["30", "", "s", "1.5s", "10x", "0s", "1h-5m", "9999999999999h"] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn units_round_trip_through_serde() {
        let b: Bytes = serde_json::from_str("\"128Mi\"").unwrap();
        assert_eq!(serde_json::to_string(&b).unwrap(), "\"128Mi\"");
        let b: Bytes = serde_json::from_str("1048576").unwrap();
        assert_eq!(b, Bytes::mib(1));
        let c: MilliCpu = serde_json::from_str("0.5").unwrap();
        assert_eq!(c, MilliCpu(500));
        assert!(serde_json::from_str::<HumanDuration>("30").is_err());
        assert!(serde_json::from_str::<Bytes>("-5").is_err());
    }
}
