//! Nano address vectors from `testdata/nano.json` (made with published Nano libraries; the
//! protocol crate's tests check it against the shared copy).

use dpow_keys::{KeyError, decode_account, encode_account};

fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("../../testdata/nano.json")).expect("vectors are JSON")
}

#[test]
fn addresses_match_vectors() {
    let v = vectors();
    let list = v["addresses"].as_array().expect("addresses");
    assert!(!list.is_empty());
    for a in list {
        let key_hex = a["public_key"].as_str().expect("public_key");
        let mut key = [0u8; 32];
        hex::decode_to_slice(key_hex, &mut key).expect("hex key");
        assert_eq!(
            encode_account(&key),
            a["address"].as_str().expect("address")
        );
        assert_eq!(
            decode_account(a["address"].as_str().expect("address")).expect("decode"),
            key
        );
        assert_eq!(
            decode_account(a["address_xrb"].as_str().expect("xrb")).expect("decode xrb"),
            key
        );
    }
}

#[test]
fn invalid_addresses_are_rejected_with_reason() {
    let v = vectors();
    let list = v["invalid_addresses"]
        .as_array()
        .expect("invalid_addresses");
    assert!(!list.is_empty());
    for a in list {
        let addr = a["address"].as_str().expect("address");
        let why = a["why"].as_str().expect("why");
        let err = decode_account(addr).expect_err(addr);
        let KeyError::BadAddress(msg) = &err else {
            panic!("{addr}: wrong error kind {err}")
        };
        let word = why
            .split_whitespace()
            .next()
            .unwrap_or(why)
            .trim_matches('\'');
        let expect_word = match word {
            "checksum" => "checksum",
            "length" => "length",
            "prefix" => "prefix",
            "character" => "alphabet",
            "first" => "first character",
            other => other,
        };
        assert!(
            msg.contains(expect_word),
            "{addr}: message {msg:?} should mention {expect_word:?} ({why})"
        );
    }
}
