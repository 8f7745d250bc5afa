#![no_main]
//! The fuzz target for `dpow_testkit::fuzz::receipt`; the properties it checks are in its docs.

libfuzzer_sys::fuzz_target!(
    init: dpow_testkit::fuzz::init("envelope_receipt"),
    |data: &[u8]| dpow_testkit::fuzz::receipt(data)
);
