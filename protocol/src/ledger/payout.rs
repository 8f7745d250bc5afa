//! Payouts: an epoch's pool of raw split over payout accounts in proportion to credits earned,
//! in exact integers, and the report that lists it.
//!
//! # The rounding rule
//!
//! With `total` the sum of the credits, each account first gets
//! `floor(pool × credits / total)` raw, computed in 256-bit arithmetic so nothing overflows for
//! any `u128` pool and credits. What those floors leave over (fewer raw than there are
//! accounts) is handed out one raw each, to the accounts with the largest remainders
//! `pool × credits mod total` (so the largest fractional parts), ties going to the lower
//! account key. Each account therefore gets its exact share rounded down or up, and the amounts
//! add up to the pool exactly. Lines are listed in account-key order, which is also the order
//! of the `nano_` addresses as text.
//!
//! The accounts are the [`NanoAccount`]s named inside the workers' signed results, so a payout
//! is computed from receipts alone; credits of results that named no account are unclaimed
//! and are not part of the split.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dpow_keys::{NanoAccount, PublicKey};

use super::LedgerError;
use super::amount::format_raw_as_nano;

/// The signing domain of a payout report: a registrar signs
/// `"dpow/2/payout-report" ‖ network id ‖ 0x00 ‖ csv` (see [`report_signing_input`]).
const REPORT_DOMAIN: &[u8] = b"dpow/2/payout-report";

/// One account's payout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayoutLine {
    /// The account paid: a Nano account named in the workers' signed results.
    pub address: NanoAccount,
    /// The credits it earned in the epoch.
    pub credits: u128,
    /// Its share of the pool, in raw.
    pub raw: u128,
}

/// `a × b` as `(high, low)` 128-bit halves.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const LOW: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & LOW);
    let (b1, b0) = (b >> 64, b & LOW);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    // Below 3 × 2^64: cannot overflow.
    let mid = (p00 >> 64) + (p01 & LOW) + (p10 & LOW);
    let lo = (p00 & LOW) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

/// `(hi·2^128 + lo) / d` and its remainder, for `d > hi` (so the quotient fits in 128 bits):
/// binary long division, one bit of `lo` at a time.
fn div_wide(hi: u128, lo: u128, d: u128) -> (u128, u128) {
    let (mut rem, mut quot) = (hi, 0u128);
    for bit in (0..128).rev() {
        // rem < d before the shift, so the true value 2·rem + bit is below 2d; `carry` is its
        // 129th bit, and when set the value is certainly at least d.
        let carry = rem >> 127;
        rem = (rem << 1) | ((lo >> bit) & 1);
        quot <<= 1;
        if carry == 1 || rem >= d {
            rem = rem.wrapping_sub(d);
            quot |= 1;
        }
    }
    (quot, rem)
}

/// `floor(pool × credits / total)` and `pool × credits mod total`, for `0 < credits <= total`.
fn share(pool: u128, credits: u128, total: u128) -> (u128, u128) {
    let (hi, lo) = mul_wide(pool, credits);
    // pool × credits <= (2^128 − 1) × total, so hi < total.
    div_wide(hi, lo, total)
}

/// Split `pool_raw` over the accounts in `earned` (payout account → credits) in proportion to
/// their credits, by the rounding rule in the module docs. Accounts with 0 credits get no
/// line. The raw amounts add up to `pool_raw` exactly.
pub fn payout(
    earned: &BTreeMap<NanoAccount, u128>,
    pool_raw: u128,
) -> Result<Vec<PayoutLine>, LedgerError> {
    let mut total: u128 = 0;
    for &c in earned.values() {
        total = total.checked_add(c).ok_or(LedgerError::CreditsOverflow)?;
    }
    if total == 0 {
        return Err(LedgerError::NothingEarned);
    }
    if pool_raw == 0 {
        return Err(LedgerError::ZeroPool);
    }
    let mut lines = Vec::with_capacity(earned.len());
    let mut remainders = Vec::with_capacity(earned.len());
    let mut paid: u128 = 0;
    for (&address, &credits) in earned.iter().filter(|(_, c)| **c > 0) {
        let (raw, rem) = share(pool_raw, credits, total);
        // The floors add up to at most the pool.
        paid = paid.saturating_add(raw);
        remainders.push((rem, lines.len()));
        lines.push(PayoutLine {
            address,
            credits,
            raw,
        });
    }
    // Largest remainder first; the lines are in address order, so on a tie the lower index
    // (the lower address) comes first.
    remainders.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    // The sum of the remainders is `left × total` and each is below `total`, so fewer raw
    // are left than there are lines with a non-zero remainder.
    let left = pool_raw - paid;
    for &(_, i) in remainders
        .iter()
        .take(usize::try_from(left).unwrap_or(usize::MAX))
    {
        if let Some(line) = lines.get_mut(i) {
            line.raw += 1;
        }
    }
    Ok(lines)
}

/// The bytes a registrar signs to vouch for a report of network `net`: the domain tag
/// `"dpow/2/payout-report"`, the network id, a zero byte and the report's CSV
/// ([`PayoutReport::to_csv`]). A report signed for one network is a bad signature on any
/// other, even where the same registrar key pays the same addresses.
pub fn report_signing_input(csv: &str, net: &crate::NetworkId) -> Vec<u8> {
    let mut v = Vec::with_capacity(REPORT_DOMAIN.len() + 33 + csv.len());
    v.extend_from_slice(REPORT_DOMAIN);
    v.extend_from_slice(&net.0);
    v.push(0);
    v.extend_from_slice(csv.as_bytes());
    v
}

/// The registrar checkpoint a report was computed against (see `crate::checkpoint`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointRef {
    /// The registrar that signed the checkpoint.
    pub registrar: PublicKey,
    /// The epoch digest it states.
    pub digest: [u8; 32],
    /// The receipts it counts.
    pub receipts: u64,
}

/// One epoch's payout: the pool, the credits and the lines, rendered the same way byte for byte
/// by everyone who computes it from the same earnings and pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutReport {
    epoch: u64,
    pool_raw: u128,
    total_credits: u128,
    lines: Vec<PayoutLine>,
    checkpoint: Option<CheckpointRef>,
}

impl PayoutReport {
    /// Compute the payout of `pool_raw` for `epoch` over `earned` (payout account → credits),
    /// as [`payout`] does.
    pub fn new(
        epoch: u64,
        earned: &BTreeMap<NanoAccount, u128>,
        pool_raw: u128,
    ) -> Result<Self, LedgerError> {
        let lines = payout(earned, pool_raw)?;
        // `payout` succeeded, so the credits add up without overflow.
        let total_credits = lines.iter().map(|l| l.credits).sum();
        Ok(PayoutReport {
            epoch,
            pool_raw,
            total_credits,
            lines,
            checkpoint: None,
        })
    }

    /// The same report, naming the checkpoint its credits were checked against.
    pub fn with_checkpoint(mut self, checkpoint: CheckpointRef) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }

    /// The checkpoint the report names, if any.
    pub fn checkpoint(&self) -> Option<&CheckpointRef> {
        self.checkpoint.as_ref()
    }

    /// The epoch paid for.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The pool, in raw (the sum of the lines).
    pub fn pool_raw(&self) -> u128 {
        self.pool_raw
    }

    /// The credits earned in the epoch, over all accounts.
    pub fn total_credits(&self) -> u128 {
        self.total_credits
    }

    /// The lines, in account order.
    pub fn lines(&self) -> &[PayoutLine] {
        &self.lines
    }

    /// CSV: the header `epoch,address,credits,raw`, then one line per account, `\n` line
    /// ends, integers in decimal. The pool is the sum of the `raw` column. When the report
    /// names a checkpoint, a last line `checkpoint,<registrar>,<digest hex>,<receipts>`
    /// follows. This is the text a registrar signs.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("epoch,address,credits,raw\n");
        for l in &self.lines {
            // Writing to a String cannot fail.
            let _ = writeln!(s, "{},{},{},{}", self.epoch, l.address, l.credits, l.raw);
        }
        if let Some(c) = &self.checkpoint {
            let _ = writeln!(
                s,
                "checkpoint,{},{},{}",
                c.registrar,
                hex::encode(c.digest),
                c.receipts
            );
        }
        s
    }

    /// JSON with a fixed field order and layout. Credits and raw are decimal strings (they
    /// exceed what JSON numbers carry exactly in most readers, and Nano's RPC writes raw the
    /// same way); the epoch is a number.
    pub fn to_json(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\n  \"epoch\": {},\n  \"pool_raw\": \"{}\",\n  \"total_credits\": \"{}\",\n  \"lines\": [",
            self.epoch, self.pool_raw, self.total_credits
        );
        for (i, l) in self.lines.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(
                s,
                "{sep}\n    {{\"address\": \"{}\", \"credits\": \"{}\", \"raw\": \"{}\"}}",
                l.address, l.credits, l.raw
            );
        }
        s.push_str("\n  ]");
        if let Some(c) = &self.checkpoint {
            let _ = write!(
                s,
                ",\n  \"checkpoint\": {{\"registrar\": \"{}\", \"digest\": \"{}\", \"receipts\": {}}}",
                c.registrar,
                hex::encode(c.digest),
                c.receipts
            );
        }
        s.push_str("\n}\n");
        s
    }

    /// A table for people: a summary line, then address, credits, raw and Nano in aligned
    /// columns.
    pub fn to_table(&self) -> String {
        let rows: Vec<[String; 4]> = self
            .lines
            .iter()
            .map(|l| {
                [
                    l.address.to_string(),
                    l.credits.to_string(),
                    l.raw.to_string(),
                    format_raw_as_nano(l.raw),
                ]
            })
            .collect();
        let header = ["address", "credits", "raw", "Nano"];
        let mut width = header.map(str::len);
        for row in &rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let mut s = String::new();
        let _ = writeln!(
            s,
            "payout for epoch {}: {} Nano ({} raw) over {} credits, {} accounts\n",
            self.epoch,
            format_raw_as_nano(self.pool_raw),
            self.pool_raw,
            self.total_credits,
            self.lines.len()
        );
        let [w0, w1, w2, w3] = width;
        let _ = writeln!(
            s,
            "{:<w0$}  {:>w1$}  {:>w2$}  {:<w3$}",
            header[0], header[1], header[2], header[3]
        );
        for [a, c, r, n] in &rows {
            let _ = writeln!(s, "{a:<w0$}  {c:>w1$}  {r:>w2$}  {n:<w3$}");
        }
        match &self.checkpoint {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "\nchecked against checkpoint {} ({} receipts) signed by registrar {}",
                    hex::encode(c.digest),
                    c.receipts,
                    c.registrar
                );
            }
            None => {
                let _ = writeln!(s, "\nno registrar checkpoint named");
            }
        }
        // No trailing spaces on any line.
        s.lines()
            .map(|l| l.trim_end())
            .fold(String::new(), |mut out, l| {
                out.push_str(l);
                out.push('\n');
                out
            })
    }

    /// The bytes a registrar signs for this report of network `net`:
    /// [`report_signing_input`] of its CSV.
    pub fn signing_input(&self, net: &crate::NetworkId) -> Vec<u8> {
        report_signing_input(&self.to_csv(), net)
    }
}

#[cfg(test)]
mod tests {
    use super::{div_wide, mul_wide};
    use proptest::prelude::*;

    #[test]
    fn wide_products_at_the_edges() {
        assert_eq!(mul_wide(0, u128::MAX), (0, 0));
        assert_eq!(mul_wide(1 << 64, 1 << 64), (1, 0));
        // (2^128 − 1)^2 = 2^256 − 2^129 + 1
        assert_eq!(mul_wide(u128::MAX, u128::MAX), (u128::MAX - 1, 1));
        assert_eq!(div_wide(u128::MAX - 1, 1, u128::MAX), (u128::MAX, 0));
        assert_eq!(div_wide(0, 7, 2), (3, 1));
        // 2^128 / 3 = 113427455640312821154458202477256070485 rem 1
        assert_eq!(
            div_wide(1, 0, 3),
            (113_427_455_640_312_821_154_458_202_477_256_070_485, 1)
        );
    }

    proptest! {
        #[test]
        fn wide_math_agrees_with_u128_where_it_fits(a in any::<u64>(), b in any::<u64>(), d in 1u128..) {
            let p = u128::from(a) * u128::from(b);
            prop_assert_eq!(mul_wide(u128::from(a), u128::from(b)), (0, p));
            prop_assert_eq!(div_wide(0, p, d), (p / d, p % d));
        }

        #[test]
        fn division_inverts_multiplication(a in any::<u128>(), b in 1u128..) {
            // (a × b) / b = a exactly, with no remainder.
            let (hi, lo) = mul_wide(a, b);
            prop_assert_eq!(div_wide(hi, lo, b), (a, 0));
        }
    }
}
