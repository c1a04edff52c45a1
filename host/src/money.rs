//! Money: a whole number of nano-dollars (10⁻⁹ US dollars) in an `i64`.
//!
//! Every stored amount and every sum is a [`Money`]: integer arithmetic, so
//! adding the costs of many calls is exact, and addition saturates at the
//! `i64` bounds (about ±9.2 billion dollars) instead of overflowing. A
//! nano-dollar, not a micro-dollar, because a single token's price is often
//! below a micro-dollar (`$0.00015` per 1,000 tokens is `$0.00000015` a
//! token) and a short call would otherwise round to nothing.
//!
//! Floating point appears only at the edges: a provider plugin's declared
//! prices come in as `f64` dollars and are converted once with
//! [`Money::from_usd`]; the API shows dollars as an exact decimal JSON
//! number through [`Usd`].

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// Nano-dollars in one dollar.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// An amount of US dollars as a whole number of nano-dollars. Serialized
/// (in stored JSON rows) as that integer; [`Usd`] renders it as dollars.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    /// Nothing.
    pub const ZERO: Money = Money(0);
    /// The largest amount; saturating sums stop here.
    pub const MAX: Money = Money(i64::MAX);

    /// `nanos` nano-dollars.
    pub const fn from_nanos(nanos: i64) -> Money {
        Money(nanos)
    }

    /// The amount in nano-dollars.
    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// `usd` dollars rounded to the nearest nano-dollar (halves away from
    /// zero); beyond the `i64` range it saturates, and NaN is zero.
    pub fn from_usd(usd: f64) -> Money {
        // `as` saturates at the bounds and maps NaN to 0.
        Money((usd * NANOS_PER_USD as f64).round() as i64)
    }

    /// The amount in dollars as the nearest `f64`, for what the plugin
    /// contract carries as `f64` (a router's `remaining-budget`).
    pub fn to_usd_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_USD as f64
    }

    /// The sum, or `None` when it does not fit.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// The sum, held at [`Money::MAX`] (or the lowest amount) when it does
    /// not fit.
    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    /// The amount for the API: dollars as an exact decimal JSON number.
    pub fn usd(self) -> Usd {
        Usd(self)
    }
}

impl From<i64> for Money {
    fn from(nanos: i64) -> Money {
        Money(nanos)
    }
}

impl std::iter::Sum for Money {
    /// Saturating, like [`Money::saturating_add`].
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Money::saturating_add)
    }
}

/// A decimal amount of dollars that is not one [`Money`] can hold exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected dollars as a plain decimal with at most 9 decimal places, such as 0.0025")]
pub struct BadAmount;

impl std::str::FromStr for Money {
    type Err = BadAmount;

    /// Dollars written as a plain decimal (`12`, `0.0000005`, `-1.25`),
    /// exactly: at most nine decimal places, no exponent.
    fn from_str(s: &str) -> Result<Money, BadAmount> {
        let (negative, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(frac) || frac.len() > 9 {
            return Err(BadAmount);
        }
        if digits.ends_with('.') {
            return Err(BadAmount);
        }
        let whole: i64 = whole.parse().map_err(|_| BadAmount)?;
        let frac: i64 = format!("{frac:0<9}").parse().map_err(|_| BadAmount)?;
        let nanos = whole
            .checked_mul(NANOS_PER_USD)
            .and_then(|n| n.checked_add(frac))
            .ok_or(BadAmount)?;
        Ok(Money(if negative { -nanos } else { nanos }))
    }
}

/// Dollars as a plain decimal with no exponent and no trailing zeros:
/// `0.0000005`, `12`, `-1.25`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let per = NANOS_PER_USD.unsigned_abs();
        let (whole, frac) = (abs / per, abs % per);
        if frac == 0 {
            return write!(f, "{sign}{whole}");
        }
        let digits = format!("{frac:09}");
        write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// An amount of money as the API shows it: US dollars, serialized as a
/// JSON number written exactly from the integer ([`Money`]'s `Display`),
/// never through `f64`. Fields of this type are documented as numbers with
/// `#[schema(value_type = f64)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Usd(pub Money);

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // serde_json writes a `RawValue` as it is; other serializers (a
        // `serde_json::Value` among them) get the number parsed.
        let raw = serde_json::value::RawValue::from_string(self.0.to_string())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        for (text, nanos) in [
            ("0", 0),
            ("0.000000001", 1),
            ("0.0000005", 500),
            ("12.34", 12_340_000_000),
            ("-1.25", -1_250_000_000),
            ("9223372036.854775807", i64::MAX),
        ] {
            assert_eq!(text.parse::<Money>(), Ok(Money(nanos)), "{text}");
            assert_eq!(Money(nanos).to_string().parse::<Money>(), Ok(Money(nanos)));
        }
        for bad in [
            "",
            ".5",
            "1.",
            "1e-7",
            "0.0000000001",
            "abc",
            "1.2.3",
            "+1",
            "9223372037",
            "--1",
        ] {
            assert_eq!(bad.parse::<Money>(), Err(BadAmount), "{bad}");
        }
    }

    #[test]
    fn renders_exact_decimals() {
        let cases = [
            (0, "0"),
            (1, "0.000000001"),
            (500, "0.0000005"),
            (1_500, "0.0000015"),
            (2_500_000, "0.0025"),
            (NANOS_PER_USD, "1"),
            (12 * NANOS_PER_USD + 340_000_000, "12.34"),
            (-1_250_000_000, "-1.25"),
            (i64::MAX, "9223372036.854775807"),
            (i64::MIN, "-9223372036.854775808"),
        ];
        for (nanos, text) in cases {
            assert_eq!(Money::from_nanos(nanos).to_string(), text);
        }
    }

    #[test]
    fn serializes_as_nanos_in_storage_and_as_dollars_for_the_api() {
        let m = Money::from_nanos(500);
        assert_eq!(serde_json::to_string(&m).unwrap(), "500");
        assert_eq!(serde_json::from_str::<Money>("500").unwrap(), m);
        assert_eq!(serde_json::to_string(&m.usd()).unwrap(), "0.0000005");
        let doc = serde_json::json!({ "n": 1 });
        #[derive(Serialize)]
        struct View<'a> {
            cost_usd: Usd,
            none: Option<Usd>,
            other: &'a serde_json::Value,
        }
        let view = View {
            cost_usd: Money::from_nanos(1_500).usd(),
            none: None,
            other: &doc,
        };
        assert_eq!(
            serde_json::to_string(&view).unwrap(),
            r#"{"cost_usd":0.0000015,"none":null,"other":{"n":1}}"#
        );
        // Through a `Value` it is the same number, written as `f64`.
        let value = serde_json::to_value(Money::from_nanos(500).usd()).unwrap();
        assert_eq!(value.as_f64(), Some(5e-7));
    }

    #[test]
    fn sums_are_exact_where_f64_drifts() {
        let three_tenths_of_a_micro = Money::from_nanos(300);
        let total: Money = std::iter::repeat_n(three_tenths_of_a_micro, 10).sum();
        assert_eq!(total.to_string(), "0.000003");
        let drifting: f64 = std::iter::repeat_n(3e-7, 10).sum();
        assert_eq!(drifting.to_string(), "0.0000030000000000000005");
        let many: Money = std::iter::repeat_n(Money::from_nanos(500), 1_000_000).sum();
        assert_eq!(many.to_string(), "0.5");
    }

    #[test]
    fn addition_saturates_or_reports_overflow() {
        let near = Money::from_nanos(i64::MAX - 1);
        assert_eq!(near.checked_add(Money::from_nanos(1)), Some(Money::MAX));
        assert_eq!(near.checked_add(Money::from_nanos(2)), None);
        assert_eq!(near.saturating_add(Money::from_nanos(10)), Money::MAX);
        assert_eq!(
            [Money::MAX, Money::MAX].into_iter().sum::<Money>(),
            Money::MAX
        );
        let low = Money::from_nanos(i64::MIN + 1);
        assert_eq!(low.saturating_add(Money::from_nanos(-10)).nanos(), i64::MIN);
    }

    #[test]
    fn dollars_round_to_the_nearest_nano_dollar() {
        assert_eq!(Money::from_usd(0.0025).nanos(), 2_500_000);
        assert_eq!(Money::from_usd(0.0001).nanos(), 100_000);
        assert_eq!(Money::from_usd(0.000_000_000_4).nanos(), 0);
        assert_eq!(Money::from_usd(0.000_000_000_6).nanos(), 1);
        assert_eq!(Money::from_usd(5.000_000_000_000_001e-7).nanos(), 500);
        assert_eq!(Money::from_usd(-0.5).nanos(), -500_000_000);
        assert_eq!(Money::from_usd(f64::NAN), Money::ZERO);
        assert_eq!(Money::from_usd(f64::INFINITY), Money::MAX);
        assert_eq!(Money::from_usd(1e300), Money::MAX);
        assert_eq!(Money::from_usd(-1e300).nanos(), i64::MIN);
    }
}
