//! Registrar-signed payout reports: `dpow ledger payout --sign-key` signs a report's CSV with a
//! genesis registrar's key, and `dpow ledger check-report` checks such a signature offline.
//!
//! The signature is ed25519 over [`report_signing_input`] of the CSV bytes, exactly as
//! `--csv` prints them (see docs/ledger.md, "Reports"). Checking a report also re-parses the
//! CSV and recomputes it from its own credits and pool, so a signed file that does not follow
//! the payout rule is refused too.

use std::collections::BTreeMap;

use dpow_keys::{NanoAccount, PublicKey, SecretKey, Signature};
use dpow_protocol::NetworkId;
use dpow_protocol::ledger::{CheckpointRef, PayoutReport, report_signing_input};

/// The first line of every payout report's CSV.
pub(crate) const REPORT_HEADER: &str = "epoch,address,credits,raw";

/// Why a report could not be signed or did not check.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    /// The key is not one of the genesis registrars.
    #[error(
        "{key} is not a registrar of this network (the genesis lists {known}); only a genesis registrar's signature vouches for a payout report"
    )]
    NotRegistrar {
        /// The key, as a `nano_` account.
        key: String,
        /// The genesis registrars, as `nano_` accounts, comma-separated.
        known: String,
    },
    /// The signature does not verify over the report.
    #[error(
        "bad signature: it does not match this report and registrar (the CSV was changed after signing, or another key signed it)"
    )]
    BadSignature,
    /// The signature text is not 128 hex digits.
    #[error("malformed signature: {0}")]
    MalformedSignature(String),
    /// The text is not a payout report.
    #[error("not a payout report: {0}")]
    NotAReport(String),
}

/// A report as read back from its CSV: the epoch, the credits per account and the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParsedReport {
    /// The epoch of every line.
    pub epoch: u64,
    /// Credits per payout account.
    pub earned: BTreeMap<NanoAccount, u128>,
    /// The sum of the `raw` column.
    pub pool_raw: u128,
    /// The checkpoint named on the last line, if any.
    pub checkpoint: Option<CheckpointRef>,
}

fn not_a_report(line: usize, reason: impl std::fmt::Display) -> ReportError {
    ReportError::NotAReport(format!("line {line}: {reason}"))
}

/// Read a report's CSV back: the header `epoch,address,credits,raw`, then at least one line of
/// one epoch, a `nano_` address, credits and raw in decimal, each line ending in `\n`.
pub(crate) fn parse_report(csv: &str) -> Result<ParsedReport, ReportError> {
    let Some(body) = csv.strip_suffix('\n') else {
        return Err(ReportError::NotAReport(
            "it does not end with a line end (\\n)".into(),
        ));
    };
    let mut lines = body.split('\n');
    let header = lines.next().unwrap_or_default();
    if header != REPORT_HEADER {
        return Err(not_a_report(
            1,
            format!("the header is {header:?}, expected {REPORT_HEADER:?}"),
        ));
    }
    let mut epoch = None;
    let mut earned = BTreeMap::new();
    let mut pool_raw: u128 = 0;
    let mut checkpoint = None;
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        if checkpoint.is_some() {
            return Err(not_a_report(n, "a line after the checkpoint line"));
        }
        let fields: Vec<&str> = line.split(',').collect();
        if let ["checkpoint", registrar, digest, receipts] = fields[..] {
            let registrar: PublicKey = registrar
                .parse()
                .map_err(|err| not_a_report(n, format!("checkpoint registrar: {err}")))?;
            let mut d = [0u8; 32];
            hex::decode_to_slice(digest, &mut d)
                .map_err(|err| not_a_report(n, format!("checkpoint digest: {err}")))?;
            let receipts: u64 = receipts
                .parse()
                .map_err(|err| not_a_report(n, format!("checkpoint receipts: {err}")))?;
            checkpoint = Some(CheckpointRef {
                registrar,
                digest: d,
                receipts,
            });
            continue;
        }
        let [e, address, credits, raw] = fields[..] else {
            return Err(not_a_report(
                n,
                format!("{} fields, expected 4: {line:?}", fields.len()),
            ));
        };
        let e: u64 = e
            .parse()
            .map_err(|err| not_a_report(n, format!("epoch {e:?}: {err}")))?;
        if *epoch.get_or_insert(e) != e {
            return Err(not_a_report(n, "a second epoch in one report"));
        }
        if !address.starts_with("nano_") {
            return Err(not_a_report(
                n,
                format!("address {address:?} is not a nano_ account"),
            ));
        }
        let address: NanoAccount = address
            .parse()
            .map_err(|err| not_a_report(n, format!("address {address:?}: {err}")))?;
        let credits: u128 = credits
            .parse()
            .map_err(|err| not_a_report(n, format!("credits {credits:?}: {err}")))?;
        let raw: u128 = raw
            .parse()
            .map_err(|err| not_a_report(n, format!("raw {raw:?}: {err}")))?;
        if earned.insert(address, credits).is_some() {
            return Err(not_a_report(n, "an address listed twice"));
        }
        pool_raw = pool_raw
            .checked_add(raw)
            .ok_or_else(|| not_a_report(n, "the raw column adds up to more than 2^128 - 1"))?;
    }
    let Some(epoch) = epoch else {
        return Err(ReportError::NotAReport(
            "it has a header but no lines".into(),
        ));
    };
    Ok(ParsedReport {
        epoch,
        earned,
        pool_raw,
        checkpoint,
    })
}

/// Recompute the report from its own credits and pool and check that it renders to `csv`
/// byte for byte: the lines follow the payout rule, in order.
pub(crate) fn recompute(parsed: &ParsedReport, csv: &str) -> Result<PayoutReport, ReportError> {
    let mut report = PayoutReport::new(parsed.epoch, &parsed.earned, parsed.pool_raw)
        .map_err(|e| ReportError::NotAReport(e.to_string()))?;
    if let Some(c) = parsed.checkpoint {
        report = report.with_checkpoint(c);
    }
    if report.to_csv() != csv {
        return Err(ReportError::NotAReport(
            "its lines are not the split of their own pool by the payout rule (docs/ledger.md), or not in address order".into(),
        ));
    }
    Ok(report)
}

/// Refuse a key that is not one of the genesis `registrars`.
pub(crate) fn require_registrar(
    key: &PublicKey,
    registrars: &[PublicKey],
) -> Result<(), ReportError> {
    if registrars.contains(key) {
        return Ok(());
    }
    Err(ReportError::NotRegistrar {
        key: key.to_string(),
        known: registrars
            .iter()
            .map(PublicKey::to_key_string)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Sign a report's CSV for network `net` with `key`, which must be one of the genesis
/// `registrars`.
pub(crate) fn sign_report(
    csv: &str,
    key: &SecretKey,
    registrars: &[PublicKey],
    net: &NetworkId,
) -> Result<Signature, ReportError> {
    require_registrar(&key.public(), registrars)?;
    Ok(key.sign(&report_signing_input(csv, net)))
}

/// Check a signed report: `csv` parses as a report, `registrar` is one of the genesis
/// `registrars`, `signature` is its signature over [`report_signing_input`] of `csv` for network
/// `net`, and the
/// lines follow the payout rule. Returns the report.
pub(crate) fn verify_report(
    csv: &str,
    signature: &Signature,
    registrar: &PublicKey,
    registrars: &[PublicKey],
    net: &NetworkId,
) -> Result<PayoutReport, ReportError> {
    let parsed = parse_report(csv)?;
    require_registrar(registrar, registrars)?;
    registrar
        .verify(&report_signing_input(csv, net), signature)
        .map_err(|_| ReportError::BadSignature)?;
    recompute(&parsed, csv)
}

/// The report's JSON ([`PayoutReport::to_json`], fields and layout unchanged) with two more
/// fields at the end: `"registrar"` (its `nano_` account) and `"signature"` (128 hex digits).
pub(crate) fn signed_json(
    report: &PayoutReport,
    registrar: &PublicKey,
    signature: &Signature,
) -> String {
    let json = report.to_json();
    // `to_json` ends with the closing brace of its one object: reopen it.
    let body = json.trim_end();
    let body = body.strip_suffix('}').unwrap_or(body).trim_end();
    format!(
        "{body},\n  \"registrar\": \"{}\",\n  \"signature\": \"{}\"\n}}\n",
        registrar,
        signature_hex(signature)
    )
}

/// A signature as 128 lower-case hex digits.
pub(crate) fn signature_hex(signature: &Signature) -> String {
    hex::encode(signature.0)
}

/// A signature from 128 hex digits (surrounding whitespace ignored).
pub(crate) fn parse_signature(text: &str) -> Result<Signature, ReportError> {
    let text = text.trim();
    let mut raw = [0u8; 64];
    hex::decode_to_slice(text, &mut raw).map_err(|e| {
        let shown: String = text.chars().take(140).collect();
        ReportError::MalformedSignature(format!("{shown:?}: {e} (expected 128 hex digits)"))
    })?;
    Ok(Signature(raw))
}

#[cfg(test)]
mod tests {
    use dpow_testkit::builders::NET;

    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    fn report() -> String {
        let account = |n: u8| NanoAccount::from_bytes([n; 32]).expect("not burn");
        let earned = BTreeMap::from([(account(1), 1u128), (account(2), 2), (account(3), 4)]);
        PayoutReport::new(19_675, &earned, 1_000_000_000_000_000_000_000_000_000_000)
            .expect("report")
            .to_csv()
    }

    #[test]
    fn a_registrar_signature_verifies_and_nothing_else_does() {
        let csv = report();
        let (registrar, other) = (key(9), key(10));
        let registrars = [other.public(), registrar.public()];
        let sig = sign_report(&csv, &registrar, &registrars, &NET).expect("a registrar signs");
        // The signature is over the domain-tagged CSV, nothing else.
        assert!(
            registrar
                .public()
                .verify(&report_signing_input(&csv, &NET), &sig)
                .is_ok()
        );
        assert!(registrar.public().verify(csv.as_bytes(), &sig).is_err());
        let back = parse_signature(&signature_hex(&sig)).expect("hex round trip");
        let checked = verify_report(&csv, &back, &registrar.public(), &registrars, &NET)
            .expect("valid report");
        assert_eq!(checked.to_csv(), csv);
        assert_eq!(checked.epoch(), 19_675);
        // The same report and key on another network (a registrar key used on two).
        assert!(matches!(
            verify_report(
                &csv,
                &sig,
                &registrar.public(),
                &registrars,
                &dpow_testkit::builders::OTHER_NET
            ),
            Err(ReportError::BadSignature)
        ));
        // Another registrar's name on this signature.
        assert!(matches!(
            verify_report(&csv, &sig, &other.public(), &registrars, &NET),
            Err(ReportError::BadSignature)
        ));
        // One byte changed (a digit of the last raw amount).
        let mut tampered = csv.clone().into_bytes();
        let at = tampered.len() - 2;
        tampered[at] = if tampered[at] == b'1' { b'2' } else { b'1' };
        let tampered = String::from_utf8(tampered).expect("utf-8");
        assert!(matches!(
            verify_report(&tampered, &sig, &registrar.public(), &registrars, &NET),
            Err(ReportError::BadSignature)
        ));
    }

    #[test]
    fn only_a_genesis_registrar_signs_or_is_believed() {
        let csv = report();
        let outsider = key(11);
        let registrars = [key(9).public()];
        let err = sign_report(&csv, &outsider, &registrars, &NET).expect_err("not a registrar");
        assert!(matches!(err, ReportError::NotRegistrar { .. }));
        assert!(err.to_string().contains(&outsider.public().to_string()));
        // A valid signature by a key the genesis does not list is still refused.
        let sig = outsider.sign(&report_signing_input(&csv, &NET));
        assert!(matches!(
            verify_report(&csv, &sig, &outsider.public(), &registrars, &NET),
            Err(ReportError::NotRegistrar { .. })
        ));
    }

    #[test]
    fn what_is_not_a_report_is_refused_before_the_signature() {
        let csv = report();
        let registrar = key(9);
        let registrars = [registrar.public()];
        let cases = [
            csv.replacen("epoch,address,credits,raw", "epoch,account,credits,raw", 1),
            csv.trim_end().to_string(),
            format!("{REPORT_HEADER}\n"),
            format!("{csv}1,2,3\n"),
            csv.replace("\n", "\r\n"),
        ];
        for bad in cases {
            // Signed by the registrar, so only the format can fail.
            let sig = registrar.sign(&report_signing_input(&bad, &NET));
            assert!(
                matches!(
                    verify_report(&bad, &sig, &registrar.public(), &registrars, &NET),
                    Err(ReportError::NotAReport(_))
                ),
                "{bad:?}"
            );
        }
        // Well formed and signed, but the amounts do not follow the payout rule.
        let parsed = parse_report(&csv).expect("parses");
        let last = parsed.earned.keys().last().expect("lines").to_string();
        let skewed: String = csv
            .lines()
            .map(|l| {
                if l.contains(&last) {
                    let (head, raw) = l.rsplit_once(',').expect("4 fields");
                    let raw: u128 = raw.parse().expect("raw");
                    format!("{head},{}\n", raw - 1)
                } else if l.contains(&parsed.earned.keys().next().expect("lines").to_string()) {
                    let (head, raw) = l.rsplit_once(',').expect("4 fields");
                    let raw: u128 = raw.parse().expect("raw");
                    format!("{head},{}\n", raw + 1)
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        assert_ne!(skewed, csv);
        let sig = registrar.sign(&report_signing_input(&skewed, &NET));
        assert!(matches!(
            verify_report(&skewed, &sig, &registrar.public(), &registrars, &NET),
            Err(ReportError::NotAReport(_))
        ));
    }

    #[test]
    fn signed_json_keeps_the_report_fields_and_adds_two_at_the_end() {
        let csv = report();
        let parsed = parse_report(&csv).expect("parses");
        let r = recompute(&parsed, &csv).expect("the rule holds");
        let registrar = key(9);
        let sig = sign_report(&csv, &registrar, &[registrar.public()], &NET).expect("signs");
        let text = signed_json(&r, &registrar.public(), &sig);
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["registrar"], registrar.public().to_string().as_str());
        assert_eq!(v["signature"], signature_hex(&sig).as_str());
        let plain: serde_json::Value = serde_json::from_str(&r.to_json()).expect("JSON");
        for field in ["epoch", "pool_raw", "total_credits", "lines"] {
            assert_eq!(v[field], plain[field], "{field}");
        }
        // Same text up to the end of the lines, then the two new fields in this order.
        let head = r.to_json();
        let head = head
            .trim_end()
            .strip_suffix('}')
            .expect("object")
            .trim_end();
        assert!(text.starts_with(head));
        let at = |f: &str| text.find(&format!("\"{f}\"")).expect("field present");
        assert!(at("lines") < at("registrar") && at("registrar") < at("signature"));
        assert!(text.ends_with("\"\n}\n"));
    }

    #[test]
    fn malformed_signatures_are_named() {
        for bad in [
            "",
            "zz",
            &"ab".repeat(63),
            &"ab".repeat(65),
            &"g".repeat(128),
        ] {
            let err = parse_signature(bad).expect_err("malformed");
            assert!(matches!(err, ReportError::MalformedSignature(_)), "{bad:?}");
            assert!(err.to_string().contains("128 hex digits"));
        }
        let sig = Signature([0xab; 64]);
        assert_eq!(
            parse_signature(&format!("  {}\n", signature_hex(&sig))).expect("hex"),
            sig
        );
    }
}
