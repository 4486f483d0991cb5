//! Exact renderings of integer pico-unit sums: money is summed as integers and only
//! turned into text at the edge, never into a float on its way to a report.

use std::fmt::Write;

use super::pricing::PICO;

/// `1234567890000` pico → `"1.23456789"`: exact, at least two decimals, no trailing zeros beyond.
pub fn decimal(pico: i128) -> String {
    let magnitude = pico.unsigned_abs();
    let unit = PICO.unsigned_abs();
    let whole = magnitude / unit;
    // Twelve digits, as the fraction is below `PICO`; trailing zeros dropped down to two.
    let mut fraction = magnitude % unit;
    let mut digits = [b'0'; 12];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (fraction % 10) as u8;
        fraction /= 10;
    }
    let shown = digits
        .iter()
        .rposition(|&d| d != b'0')
        .map_or(2, |last| (last + 1).max(2));
    let mut out = String::with_capacity(24);
    if pico < 0 {
        out.push('-');
    }
    // The whole part fits in a u64 (whose formatting is cheaper) for any real sum.
    let _ = match u64::try_from(whole) {
        Ok(whole) => write!(out, "{whole}."),
        Err(_) => write!(out, "{whole}."),
    };
    out.extend(digits[..shown].iter().map(|&d| char::from(d)));
    out
}

/// `part / whole` in units of `1 / scale`, rounded half away from zero: the one rounding rule
/// of every ratio a report shows, whatever it is rendered as.
pub fn scaled_ratio(part: i128, whole: i128, scale: i128) -> Option<i128> {
    if whole == 0 {
        return None;
    }
    let scaled = part.checked_mul(scale)?;
    let (q, r) = (scaled / whole, scaled % whole);
    // Round half away from zero: compare twice the remainder with the divisor.
    let bump = r.unsigned_abs().checked_mul(2)? >= whole.unsigned_abs();
    let negative = (scaled < 0) != (whole < 0);
    Some(match (bump, negative) {
        (false, _) => q,
        (true, true) => q - 1,
        (true, false) => q + 1,
    })
}

/// `part / whole` as a percentage with two decimals, rounded half away from zero.
pub fn percent(part: i128, whole: i128) -> Option<String> {
    let hundredths = scaled_ratio(part, whole, 10_000)?;
    let sign = if hundredths < 0 { "-" } else { "" };
    let abs = hundredths.unsigned_abs();
    Some(format!("{sign}{}.{:02}", abs / 100, abs % 100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal(0), "0.00");
        assert_eq!(decimal(PICO), "1.00");
        assert_eq!(decimal(150_000), "0.00000015");
        assert_eq!(decimal(75_000), "0.000000075");
        assert_eq!(decimal(1), "0.000000000001");
        assert_eq!(decimal(-12 * PICO - PICO / 2), "-12.50");
        assert_eq!(
            decimal(123_456_789_012_345_678_901),
            "123456789.012345678901"
        );
    }

    #[test]
    fn percentages_round_half_away_from_zero() {
        assert_eq!(percent(1, 3).as_deref(), Some("33.33"));
        assert_eq!(percent(2, 3).as_deref(), Some("66.67"));
        assert_eq!(percent(1, 8).as_deref(), Some("12.50"));
        assert_eq!(percent(-1, 8).as_deref(), Some("-12.50"));
        assert_eq!(percent(-2, 3).as_deref(), Some("-66.67"));
        assert_eq!(percent(1, 80_000).as_deref(), Some("0.00"));
        assert_eq!(percent(1, 0), None);
    }

    #[test]
    fn ratios_round_half_away_from_zero_at_any_scale() {
        // 1/32 = 0.03125: a float formatted with {:.4} rounds this tie to even (0.0312).
        assert_eq!(scaled_ratio(1, 32, 10_000), Some(313));
        assert_eq!(scaled_ratio(-1, 32, 10_000), Some(-313));
        assert_eq!(scaled_ratio(1, 16, 1_000), Some(63));
        assert_eq!(scaled_ratio(1, 3, 10_000), Some(3_333));
        assert_eq!(scaled_ratio(0, 5, 10_000), Some(0));
        assert_eq!(scaled_ratio(1, 0, 10_000), None);
    }
}
