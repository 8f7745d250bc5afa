#![no_main]
//! The fuzz target for `dpow_testkit::fuzz::dht_record`; the properties it checks are in its docs.

libfuzzer_sys::fuzz_target!(
    init: dpow_testkit::fuzz::init("dht_record"),
    |data: &[u8]| dpow_testkit::fuzz::dht_record(data)
);
