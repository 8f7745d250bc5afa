#![no_main]
//! The fuzz target for `dpow_testkit::fuzz::request`; the properties it checks are in its docs.

libfuzzer_sys::fuzz_target!(
    init: dpow_testkit::fuzz::init("envelope_request"),
    |data: &[u8]| dpow_testkit::fuzz::request(data)
);
