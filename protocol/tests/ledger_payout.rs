//! Payouts (exact shares, the rounding rule, huge values), amounts in Nano and raw, and the
//! fixed report formats. The ledger side of reports is in `ledger.rs`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use dpow_keys::NanoAccount;
use dpow_protocol::ledger::{
    CheckpointRef, LedgerError, PayoutLine, PayoutReport, RAW_PER_NANO, format_raw_as_nano,
    parse_amount, payout,
};
use dpow_testkit::builders::account as addr;
use proptest::prelude::*;

// ---- payouts --------------------------------------------------------------------------------

#[test]
fn payout_worked_example() {
    // 100 raw over 1, 2 and 4 credits: exact shares 14.29, 28.57 and 57.14. The floors 14, 28,
    // 57 leave 1 raw, which goes to the largest remainder (200 mod 7 = 4, against 2 and 1).
    let earned = BTreeMap::from([(addr(1), 1), (addr(2), 2), (addr(3), 4)]);
    let lines = payout(&earned, 100).expect("payout");
    assert_eq!(
        lines,
        vec![
            PayoutLine {
                address: addr(1),
                credits: 1,
                raw: 14
            },
            PayoutLine {
                address: addr(2),
                credits: 2,
                raw: 29
            },
            PayoutLine {
                address: addr(3),
                credits: 4,
                raw: 57
            },
        ]
    );
}

#[test]
fn payout_ties_go_to_the_lower_address() {
    let earned = BTreeMap::from([(addr(9), 1), (addr(3), 1), (addr(5), 1)]);
    let raw: Vec<(NanoAccount, u128)> = payout(&earned, 11)
        .expect("payout")
        .into_iter()
        .map(|l| (l.address, l.raw))
        .collect();
    assert_eq!(raw, vec![(addr(3), 4), (addr(5), 4), (addr(9), 3)]);
}

#[test]
fn payout_refuses_what_cannot_be_split() {
    assert_eq!(
        payout(&BTreeMap::new(), 10),
        Err(LedgerError::NothingEarned)
    );
    let zero = BTreeMap::from([(addr(1), 0)]);
    let e = payout(&zero, 10).expect_err("nothing earned");
    assert_eq!(e, LedgerError::NothingEarned);
    assert!(e.to_string().contains("no credits were earned"), "{e}");
    let one = BTreeMap::from([(addr(1), 3)]);
    assert_eq!(payout(&one, 0), Err(LedgerError::ZeroPool));
    let huge = BTreeMap::from([(addr(1), u128::MAX), (addr(2), 1)]);
    assert_eq!(payout(&huge, 10), Err(LedgerError::CreditsOverflow));
    // Accounts with no credits get no line.
    let some = BTreeMap::from([(addr(1), 0), (addr(2), 5)]);
    assert_eq!(
        payout(&some, 10).expect("payout"),
        vec![PayoutLine {
            address: addr(2),
            credits: 5,
            raw: 10
        }]
    );
}

#[test]
fn payout_of_the_largest_pool() {
    let one = BTreeMap::from([(addr(1), 1)]);
    assert_eq!(payout(&one, u128::MAX).expect("payout")[0].raw, u128::MAX);
    // Credits adding up to exactly 2^128 − 1: the small account's exact share is 1 raw.
    let edge = BTreeMap::from([(addr(1), u128::MAX - 1), (addr(2), 1)]);
    let lines = payout(&edge, u128::MAX).expect("payout");
    assert_eq!((lines[0].raw, lines[1].raw), (u128::MAX - 1, 1));
    // Three equal accounts at the top of the range: 2^128 − 1 is divisible by 3.
    let three = BTreeMap::from([
        (addr(1), u128::MAX / 4),
        (addr(2), u128::MAX / 4),
        (addr(3), u128::MAX / 4),
    ]);
    let lines = payout(&three, u128::MAX).expect("payout");
    assert!(lines.iter().all(|l| l.raw == u128::MAX / 3), "{lines:?}");
}

/// 256-bit numbers as eight 32-bit limbs, least significant first: a schoolbook check that
/// shares nothing with the library's arithmetic.
type Wide = [u64; 8];

fn wide_mul(a: u128, b: u128) -> Wide {
    let limbs = |x: u128| -> [u64; 4] { std::array::from_fn(|i| (x >> (32 * i)) as u32 as u64) };
    let (a, b) = (limbs(a), limbs(b));
    let mut out = [0u64; 8];
    for i in 0..4 {
        let mut carry = 0u64;
        for j in 0..4 {
            let t = out[i + j] + a[i] * b[j] + carry;
            out[i + j] = t & 0xffff_ffff;
            carry = t >> 32;
        }
        out[i + 4] = carry;
    }
    out
}

fn wide_cmp(a: &Wide, b: &Wide) -> Ordering {
    a.iter().rev().cmp(b.iter().rev())
}

/// `a − b` for `a >= b`, as a u128 (the difference must fit).
fn wide_sub_small(a: &Wide, b: &Wide) -> u128 {
    let mut borrow = 0i64;
    let mut out = [0u64; 8];
    for i in 0..8 {
        let mut t = a[i] as i64 - b[i] as i64 - borrow;
        borrow = i64::from(t < 0);
        if t < 0 {
            t += 1 << 32;
        }
        out[i] = t as u64;
    }
    assert_eq!(borrow, 0, "a >= b");
    assert!(
        out[4..].iter().all(|&l| l == 0),
        "difference fits in 128 bits"
    );
    out[..4]
        .iter()
        .rev()
        .fold(0u128, |acc, &l| (acc << 32) | u128::from(l))
}

fn credits_strategy() -> impl Strategy<Value = u128> {
    prop_oneof![
        0u128..10,
        1u128..=u128::from(u64::MAX),
        1u128..=u128::MAX / 16
    ]
}

fn pool_strategy() -> impl Strategy<Value = u128> {
    prop_oneof![1u128..1_000, 1u128.., Just(u128::MAX)]
}

proptest! {
    #[test]
    fn payouts_are_exact_shares_rounded_by_the_rule(
        earned in prop::collection::btree_map(any::<[u8; 32]>().prop_filter_map("not burn", |b| NanoAccount::from_bytes(b).ok()), credits_strategy(), 1..12),
        pool in pool_strategy(),
    ) {
        let total: u128 = earned.values().sum();
        let lines = match payout(&earned, pool) {
            Err(LedgerError::NothingEarned) => {
                prop_assert_eq!(total, 0);
                return Ok(());
            }
            other => other.expect("payout"),
        };
        prop_assert_eq!(lines.iter().map(|l| l.raw).sum::<u128>(), pool, "the pool, exactly");
        prop_assert_eq!(lines.len(), earned.values().filter(|&&c| c > 0).count());
        prop_assert!(lines.windows(2).all(|w| w[0].address < w[1].address), "address order");
        // Each line is its exact share rounded down or up; remember which, and the remainder.
        let mut rounding = Vec::new();
        for l in &lines {
            prop_assert_eq!(Some(&l.credits), earned.get(&l.address));
            let exact = wide_mul(pool, l.credits);
            let up = wide_cmp(&wide_mul(l.raw, total), &exact) == Ordering::Greater;
            let floor = if up { l.raw - 1 } else { l.raw };
            let rem = wide_sub_small(&exact, &wide_mul(floor, total));
            prop_assert!(rem < total, "raw {} is more than 1 from the exact share", l.raw);
            prop_assert!(!up || rem > 0, "an exact share is never rounded up");
            rounding.push((up, rem, l.address));
        }
        // Largest remainders were rounded up, ties to the lower address.
        for &(up_u, rem_u, addr_u) in &rounding {
            for &(up_d, rem_d, addr_d) in &rounding {
                if up_u && !up_d {
                    prop_assert!(rem_u > rem_d || (rem_u == rem_d && addr_u < addr_d));
                }
            }
        }
        prop_assert_eq!(payout(&earned, pool).expect("again"), lines, "deterministic");
    }
}

// ---- amounts --------------------------------------------------------------------------------

#[test]
fn amounts_that_parse() {
    let nano = RAW_PER_NANO;
    for (text, raw) in [
        ("1", nano),
        ("0", 0),
        ("1.5", nano + nano / 2),
        ("1.5nano", nano + nano / 2),
        ("1.5 Nano", nano + nano / 2),
        ("  2 NANO ", 2 * nano),
        ("0.000000000000000000000000000001", 1),
        ("0.000001", nano / 1_000_000),
        ("12345raw", 12_345),
        ("12345 raw", 12_345),
        ("12345 RAW", 12_345),
        ("007", 7 * nano),
        ("340282366920938463463374607431768211455 raw", u128::MAX),
        ("340282366.920938463463374607431768211455", u128::MAX),
    ] {
        assert_eq!(parse_amount(text), Ok(raw), "{text:?}");
    }
}

#[test]
fn amounts_that_do_not_parse_say_why() {
    for (text, why) in [
        ("", "expected a number"),
        ("nano", "expected a number"),
        ("-1", "expected a number"),
        ("+1", "expected a number"),
        (".5", "both sides of the decimal point"),
        ("1.", "both sides of the decimal point"),
        ("1..5", "more than one decimal point"),
        ("1.2.3", "more than one decimal point"),
        ("1,000", "without separators"),
        ("1_000", "without separators"),
        ("1e3", "unknown unit \"e3\""),
        ("1.5 xno", "unknown unit \"xno\""),
        ("1.5 raw", "raw is the smallest unit"),
        (
            "0.0000000000000000000000000000001",
            "31 decimals: at most 30",
        ),
        (
            "340282366920938463463374607431768211456 raw",
            "more than 2^128 - 1 raw",
        ),
        ("340282367", "more than 2^128 - 1 raw"),
        (
            "340282366.920938463463374607431768211456",
            "more than 2^128 - 1 raw",
        ),
    ] {
        let e = parse_amount(text).expect_err(text);
        assert!(
            matches!(&e, LedgerError::BadAmount { input, .. } if input == text),
            "{e:?}"
        );
        assert!(e.to_string().contains(why), "{text:?}: {e}");
    }
}

#[test]
fn raw_prints_as_nano_exactly() {
    assert_eq!(format_raw_as_nano(0), "0");
    assert_eq!(format_raw_as_nano(1), "0.000000000000000000000000000001");
    assert_eq!(format_raw_as_nano(RAW_PER_NANO), "1");
    assert_eq!(format_raw_as_nano(RAW_PER_NANO * 3 / 2), "1.5");
    assert_eq!(
        format_raw_as_nano(u128::MAX),
        "340282366.920938463463374607431768211455"
    );
}

proptest! {
    #[test]
    fn printed_amounts_parse_back(raw in any::<u128>()) {
        let text = format_raw_as_nano(raw);
        prop_assert_eq!(parse_amount(&text), Ok(raw));
        prop_assert_eq!(parse_amount(&format!("{raw} raw")), Ok(raw));
    }
}

// ---- reports --------------------------------------------------------------------------------

#[test]
fn report_formats_are_fixed() {
    let (a, b, c) = (addr(1), addr(2), addr(3));
    let earned = BTreeMap::from([(a, 1), (b, 2), (c, 4)]);
    let report = PayoutReport::new(19_675, &earned, 100).expect("report");
    let (na, nb, nc) = (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        report.to_csv(),
        format!("epoch,address,credits,raw\n19675,{na},1,14\n19675,{nb},2,29\n19675,{nc},4,57\n")
    );
    assert_eq!(
        report.to_json(),
        format!(
            "{{\n  \"epoch\": 19675,\n  \"pool_raw\": \"100\",\n  \"total_credits\": \"7\",\n  \"lines\": [\n    \
             {{\"address\": \"{na}\", \"credits\": \"1\", \"raw\": \"14\"}},\n    \
             {{\"address\": \"{nb}\", \"credits\": \"2\", \"raw\": \"29\"}},\n    \
             {{\"address\": \"{nc}\", \"credits\": \"4\", \"raw\": \"57\"}}\n  ]\n}}\n"
        )
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
    assert_eq!(json["lines"][2]["raw"], "57");

    let table = report.to_table();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(
        rows[0],
        "payout for epoch 19675: 0.0000000000000000000000000001 Nano (100 raw) over 7 credits, 3 accounts"
    );
    assert_eq!(rows[1], "");
    assert!(
        rows[2].starts_with("address ") && rows[2].ends_with("credits  raw  Nano"),
        "{table}"
    );
    assert_eq!(
        rows[3],
        format!("{na}        1   14  0.000000000000000000000000000014")
    );
    assert_eq!(rows.len(), 8);
    assert_eq!(rows[6], "");
    assert_eq!(rows[7], "no registrar checkpoint named");
    // Named with its checkpoint, the report says so in every form, and the CSV gains one line.
    let registrar = dpow_keys::SecretKey::from_seed([5; 32]).public();
    let named = report.clone().with_checkpoint(CheckpointRef {
        registrar,
        digest: [0xab; 32],
        receipts: 3,
    });
    assert_eq!(
        named.to_csv(),
        format!(
            "{}checkpoint,{registrar},{},3\n",
            report.to_csv(),
            "ab".repeat(32)
        )
    );
    let json: serde_json::Value = serde_json::from_str(&named.to_json()).expect("valid JSON");
    assert_eq!(json["checkpoint"]["receipts"], 3);
    assert_eq!(json["checkpoint"]["registrar"], registrar.to_string());
    assert!(named.to_table().contains(&"ab".repeat(32)));
    assert!(
        table.lines().all(|l| l == l.trim_end()),
        "no trailing spaces"
    );
}
