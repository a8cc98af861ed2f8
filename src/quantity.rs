//! Exact Kubernetes resource quantities (`1Gi`, `1000Mi`, `1.5Ti`, `5e9`, `500m`).
//!
//! Follows `k8s.io/apimachinery/pkg/api/resource.Quantity`: the value is exact, rounded up
//! to a thousandth of a unit, and capped at 2^63-1 units, so two quantities compare the
//! way the API server compares them. Parsing never panics: any input string either yields
//! a value or a [`QuantityError`] that says what is wrong with it.

use std::cmp::Ordering;
use std::fmt;

use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::{ToPrimitive, Zero};

/// A parsed quantity, kept as thousandths of a unit (milli-bytes for storage) so that
/// every quantity Kubernetes can represent compares exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    millis: i128,
}

/// Why a string is not a Kubernetes quantity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("it is empty")]
    Empty,
    #[error("it is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("it has no digits")]
    NoDigits,
    #[error(
        "unknown suffix {0:?} (use Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, m or an exponent like e9)"
    )]
    UnknownSuffix(String),
}

/// Longer strings are refused: the API server never sends one (it re-serializes every
/// quantity in canonical form), and refusing keeps the arithmetic bounded.
const MAX_LEN: usize = 64;
/// 2^63-1 units, in milli-units: Kubernetes caps larger quantities at this value.
const MAX_MILLIS: i128 = (i64::MAX as i128) * 1000;

impl Quantity {
    /// The value in whole units, rounded up (bytes, for storage): what Go's
    /// `Quantity.Value()` returns, and so what the CSI provisioner compares sizes with
    /// (`0.5` is 1 byte, `1500m` is 2 bytes). Written here because k8s-openapi's `Quantity`
    /// is only the string: it has no parser and no arithmetic.
    pub fn whole_units(self) -> i128 {
        self.millis.div_euclid(1000) + i128::from(self.millis.rem_euclid(1000) != 0)
    }

    pub fn from_units(units: i64) -> Self {
        Quantity {
            millis: i128::from(units) * 1000,
        }
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis % 1000 == 0 {
            write!(f, "{}", self.millis / 1000)
        } else {
            write!(f, "{}m", self.millis)
        }
    }
}

/// Parses `<sign><digits>[.<digits>]<suffix>` as Kubernetes does.
pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    if text.len() > MAX_LEN {
        return Err(QuantityError::TooLong);
    }
    let (negative, rest) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((int_part, frac_part)) => (int_part, frac_part),
        None => (number, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(QuantityError::NoDigits);
    }
    let (decimal_exponent, binary_exponent) = parse_suffix(suffix)?;

    // value = digits * 10^(decimal_exponent - fraction digits) * 2^binary_exponent;
    // in milli-units the decimal exponent grows by 3.
    let exponent = i64::from(decimal_exponent) - frac_part.len() as i64 + 3;
    let magnitude = scale(int_part, frac_part, exponent, binary_exponent);
    Ok(Quantity {
        millis: if negative { -magnitude } else { magnitude },
    })
}

/// Returns (decimal exponent, binary exponent) of a suffix.
fn parse_suffix(suffix: &str) -> Result<(i32, u32), QuantityError> {
    let binary = match suffix {
        "Ki" => Some(10),
        "Mi" => Some(20),
        "Gi" => Some(30),
        "Ti" => Some(40),
        "Pi" => Some(50),
        "Ei" => Some(60),
        _ => None,
    };
    if let Some(binary) = binary {
        return Ok((0, binary));
    }
    let decimal = match suffix {
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "" => Some(0),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(decimal) = decimal {
        return Ok((decimal, 0));
    }
    // `e<signed integer>` or `E<signed integer>`; a bare `E` was exa, handled above.
    let unknown = || QuantityError::UnknownSuffix(suffix.to_owned());
    let exponent = suffix
        .strip_prefix(['e', 'E'])
        .filter(|e| {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        })
        .ok_or_else(unknown)?;
    // Exponents beyond this range only saturate (to the cap, or to the smallest unit).
    let exponent: i64 = exponent.parse().unwrap_or(if exponent.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    });
    Ok((exponent.clamp(-1000, 1000) as i32, 0))
}

/// Computes ceil(digits * 10^exponent * 2^binary_exponent), capped at [`MAX_MILLIS`].
/// Exact: the string is at most [`MAX_LEN`] digits and the exponent is clamped, so the
/// big integers stay small.
fn scale(int_part: &str, frac_part: &str, exponent: i64, binary_exponent: u32) -> i128 {
    if let Some(value) = scale_small(int_part, frac_part, exponent, binary_exponent) {
        return value;
    }
    let Ok(mantissa) = format!("{int_part}{frac_part}").parse::<BigUint>() else {
        return 0;
    };
    if mantissa.is_zero() {
        return 0;
    }
    let numerator = mantissa << binary_exponent;
    let ten = BigUint::from(10u8);
    let value = if exponent >= 0 {
        numerator * ten.pow(exponent as u32)
    } else {
        let denominator = ten.pow(exponent.unsigned_abs() as u32);
        let (quotient, remainder) = numerator.div_rem(&denominator);
        quotient + u8::from(!remainder.is_zero())
    };
    value.to_i128().map_or(MAX_MILLIS, |v| v.min(MAX_MILLIS))
}

/// The same computation in `i128`, for the quantities people write (`10Gi`, `1000Mi`,
/// `1.5Ti`): `None` when it could overflow, and [`scale`] then takes the exact path.
fn scale_small(
    int_part: &str,
    frac_part: &str,
    exponent: i64,
    binary_exponent: u32,
) -> Option<i128> {
    // 18 digits fit a u64; times 2^60 they stay below 2^127.
    if int_part.len() + frac_part.len() > 18 || !(-18..=18).contains(&exponent) {
        return None;
    }
    // The digits of both parts as one number, read in place (both are ASCII digits only).
    let mut mantissa: u64 = 0;
    for digit in int_part.bytes().chain(frac_part.bytes()) {
        mantissa = mantissa * 10 + u64::from(digit.checked_sub(b'0').filter(|d| *d < 10)?);
    }
    let numerator = i128::from(mantissa).checked_mul(1i128 << binary_exponent)?;
    let value = if exponent >= 0 {
        numerator.checked_mul(10i128.pow(exponent as u32))?
    } else {
        let denominator = 10i128.pow(exponent.unsigned_abs() as u32);
        numerator / denominator + i128::from(numerator % denominator != 0)
    };
    Some(value.min(MAX_MILLIS))
}

/// Compares two quantity strings; `None` when either does not parse.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(parse(a).ok()?.cmp(&parse(b).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each quantity with the whole bytes it stands for.
    fn assert_bytes(cases: &[(&str, i128)]) {
        for &(text, want) in cases {
            let got = parse(text)
                .unwrap_or_else(|e| panic!("{text}: {e}"))
                .whole_units();
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn whole_units_round_up_as_value_does() {
        #[rustfmt::skip]
        let cases = [("0.5", 1), ("1500m", 2), ("2", 2), ("1001m", 2), ("1000m", 1), ("0", 0)];
        assert_bytes(&cases);
    }

    #[test]
    fn binary_and_decimal_suffixes() {
        #[rustfmt::skip]
        let cases = [
            ("1Ki", 1024), ("1Mi", 1 << 20), ("1Gi", 1 << 30), ("1Ti", 1 << 40), ("1Pi", 1 << 50), ("1Ei", 1 << 60),
            ("1k", 1_000), ("1M", 1_000_000), ("1G", 1_000_000_000), ("1T", 1_000_000_000_000),
            ("1P", 1_000_000_000_000_000), ("1E", 1_000_000_000_000_000_000),
            ("42", 42),
        ];
        assert_bytes(&cases);
    }

    #[test]
    fn fractions_and_exponents() {
        #[rustfmt::skip]
        let cases = [
            ("0.5Gi", 1 << 29), ("1.5Ti", 3 << 39), (".5Ki", 512), ("2.", 2), ("+3Mi", 3 << 20),
            ("5e9", 5_000_000_000), ("5E9", 5_000_000_000), ("5e+9", 5_000_000_000),
            // 1.2 bytes rounds up to 2 whole bytes.
            ("12e-1", 2),
        ];
        assert_bytes(&cases);
        assert_eq!(parse("500m").map(|q| q.millis), Ok(500));
        assert_eq!(parse("-1Gi").map(|q| q.whole_units()), Ok(-(1 << 30)));
    }

    #[test]
    fn comparisons_are_exact_in_bytes() {
        assert_eq!(compare("1000Mi", "1Gi"), Some(Ordering::Less));
        assert_eq!(compare("1G", "1Gi"), Some(Ordering::Less));
        assert_eq!(compare("1024Mi", "1Gi"), Some(Ordering::Equal));
        assert_eq!(compare("1073741824", "1Gi"), Some(Ordering::Equal));
        assert_eq!(compare("1073741825", "1Gi"), Some(Ordering::Greater));
        assert_eq!(compare("0.5Gi", "512Mi"), Some(Ordering::Equal));
        assert_eq!(compare("1.5Ti", "1536Gi"), Some(Ordering::Equal));
        assert_eq!(compare("5e9", "5G"), Some(Ordering::Equal));
        assert_eq!(compare("10Gi", "9.99Gi"), Some(Ordering::Greater));
        assert_eq!(compare("abc", "1Gi"), None);
    }

    #[test]
    fn sub_milli_precision_rounds_up_like_kubernetes() {
        assert_eq!(parse("0.1m").map(|q| q.millis), Ok(1));
        assert_eq!(parse("1n").map(|q| q.millis), Ok(1));
        assert_eq!(parse("1.0001").map(|q| q.millis), Ok(1001));
        assert_eq!(
            parse("0.000000000000000000000000000000000000000000001Ei").map(|q| q.millis),
            Ok(1)
        );
    }

    #[test]
    fn huge_values_are_capped_at_the_kubernetes_maximum() {
        let cap = Quantity { millis: MAX_MILLIS };
        assert_eq!(parse("1e100"), Ok(cap));
        assert_eq!(
            parse("99999999999999999999999999999999999999999999999999Ei"),
            Ok(cap)
        );
        assert_eq!(parse("9223372036854775807"), Ok(cap));
        assert_eq!(parse("16Ei"), Ok(cap));
        assert_eq!(parse("1e99999999999999999999999"), Ok(cap));
        assert_eq!(parse("1e-99999999999999999999999").map(|q| q.millis), Ok(1));
        assert_eq!(compare("1e100", "8Ei"), Some(Ordering::Equal));
    }

    #[test]
    fn zero_in_any_form_is_zero() {
        for text in ["0", "0Gi", "0.0", "000e5", "-0", "0e-1000"] {
            assert_eq!(parse(text).map(|q| q.millis), Ok(0), "{text}");
        }
    }

    #[test]
    fn malformed_quantities_are_errors() {
        assert_eq!(parse(""), Err(QuantityError::Empty));
        assert_eq!(parse("Gi"), Err(QuantityError::NoDigits));
        assert_eq!(parse("."), Err(QuantityError::NoDigits));
        assert_eq!(parse("1.2.3"), Err(QuantityError::NoDigits));
        assert_eq!(parse("-"), Err(QuantityError::NoDigits));
        assert_eq!(parse("1GB"), Err(QuantityError::UnknownSuffix("GB".into())));
        assert_eq!(
            parse("1 Gi"),
            Err(QuantityError::UnknownSuffix(" Gi".into()))
        );
        assert_eq!(parse("1gi"), Err(QuantityError::UnknownSuffix("gi".into())));
        assert_eq!(parse("1e"), Err(QuantityError::UnknownSuffix("e".into())));
        assert_eq!(parse("1e+"), Err(QuantityError::UnknownSuffix("e+".into())));
        assert_eq!(
            parse("1Gié"),
            Err(QuantityError::UnknownSuffix("Gié".into()))
        );
        assert_eq!(parse(&"1".repeat(65)), Err(QuantityError::TooLong));
    }

    #[test]
    fn the_fast_path_agrees_with_the_exact_one() {
        for text in [
            "10Gi",
            "1000Mi",
            "1.5Ti",
            "5e9",
            "500m",
            "0.001",
            "1n",
            "123456789012345678",
            "9Ei",
            "8e18",
            "1.23456789e-5",
        ] {
            let q = parse(text).expect(text);
            let digits_exact = {
                // Recompute through the exact path only.
                let (int_part, rest) = text.split_at(
                    text.find(|c: char| !(c.is_ascii_digit() || c == '.'))
                        .unwrap_or(text.len()),
                );
                let (i, f) = int_part.split_once('.').unwrap_or((int_part, ""));
                let (d, b) = parse_suffix(rest).expect("suffix");
                let exponent = i64::from(d) - f.len() as i64 + 3;
                let mantissa: BigUint = format!("{i}{f}").parse().expect("digits");
                let numerator = mantissa << b;
                let ten = BigUint::from(10u8);
                let v = if exponent >= 0 {
                    numerator * ten.pow(exponent as u32)
                } else {
                    let (q, r) = numerator.div_rem(&ten.pow(exponent.unsigned_abs() as u32));
                    q + u8::from(!r.is_zero())
                };
                v.to_i128().map_or(MAX_MILLIS, |v| v.min(MAX_MILLIS))
            };
            assert_eq!(q.millis, digits_exact, "{text}");
        }
    }

    #[test]
    fn display_shows_units_or_millis() {
        assert_eq!(Quantity::from_units(5).to_string(), "5");
        assert_eq!(parse("1500m").map(|q| q.to_string()), Ok("1500m".into()));
    }
}
