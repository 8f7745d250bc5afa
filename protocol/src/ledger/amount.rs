//! Nano amounts: parsing what a person types (`1.5`, `1.5 Nano`, `12345raw`) into raw, and
//! printing raw as Nano, both exact.

use super::LedgerError;

/// Raw per Nano: 1 Nano = 10^30 raw.
pub const RAW_PER_NANO: u128 = 1_000_000_000_000_000_000_000_000_000_000;

/// Decimal places of a Nano amount (raw is the smallest unit).
const NANO_DECIMALS: usize = 30;

fn bad(input: &str, reason: impl Into<String>) -> LedgerError {
    LedgerError::BadAmount {
        input: input.to_string(),
        reason: reason.into(),
    }
}

/// Parse a string of ASCII digits into a `u128`, refusing overflow.
fn digits(input: &str, s: &str) -> Result<u128, LedgerError> {
    s.bytes().try_fold(0u128, |acc, b| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(b - b'0')))
            .ok_or_else(|| bad(input, "more than 2^128 - 1 raw"))
    })
}

/// Parse an amount into raw.
///
/// Accepted: a Nano amount, `1`, `1.5`, `0.000001`, optionally followed by the unit `nano`
/// (any case, a space allowed before it), with at most 30 decimals: no rounding ever happens,
/// so an amount finer than 1 raw is refused; or a whole number of raw followed by `raw`
/// (`12345raw`, `12345 raw`). Refused, each with its reason: signs, a leading or trailing
/// decimal point, separators (`1,000`, `1_000`), other units, and amounts over 2^128 − 1 raw.
pub fn parse_amount(input: &str) -> Result<u128, LedgerError> {
    let s = input.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit = unit.trim_start();
    if number.is_empty() {
        return Err(bad(
            input,
            "expected a number: digits, optionally with a decimal point and a unit (nano or raw)",
        ));
    }
    if unit.starts_with([',', '_', '\'']) {
        return Err(bad(input, "write the number without separators"));
    }
    let raw_unit = if unit.eq_ignore_ascii_case("raw") {
        true
    } else if unit.is_empty() || unit.eq_ignore_ascii_case("nano") {
        false
    } else {
        return Err(bad(
            input,
            format!("unknown unit {unit:?}: write nano (the default) or raw"),
        ));
    };
    let (whole, frac) = match number.split_once('.') {
        None => (number, None),
        Some((w, f)) => (w, Some(f)),
    };
    if raw_unit {
        if frac.is_some() {
            return Err(bad(input, "raw is the smallest unit: no decimal point"));
        }
        return digits(input, whole);
    }
    let frac = frac.unwrap_or("");
    if frac.contains('.') {
        return Err(bad(input, "more than one decimal point"));
    }
    if whole.is_empty() || (number.contains('.') && frac.is_empty()) {
        return Err(bad(
            input,
            "write digits on both sides of the decimal point",
        ));
    }
    if frac.len() > NANO_DECIMALS {
        return Err(bad(
            input,
            format!(
                "{} decimals: at most {NANO_DECIMALS} (1 raw = 10^-30 Nano), and amounts are never rounded",
                frac.len()
            ),
        ));
    }
    let scale = 10u128.pow((NANO_DECIMALS - frac.len()) as u32);
    let frac_raw = if frac.is_empty() {
        0
    } else {
        digits(input, frac)? * scale
    };
    digits(input, whole)?
        .checked_mul(RAW_PER_NANO)
        .and_then(|w| w.checked_add(frac_raw))
        .ok_or_else(|| bad(input, "more than 2^128 - 1 raw"))
}

/// Raw as a Nano amount, exact: `1500000000000000000000000000000` → `1.5`, `1` → `0.` and
/// 29 zeros then `1`; no trailing zeros, no decimal point for whole amounts.
pub fn format_raw_as_nano(raw: u128) -> String {
    let whole = raw / RAW_PER_NANO;
    let frac = raw % RAW_PER_NANO;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:0width$}", width = NANO_DECIMALS);
    format!("{whole}.{}", digits.trim_end_matches('0'))
}
