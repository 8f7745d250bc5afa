#![no_main]
//! The fuzz target for `dpow_testkit::fuzz::checkpoint`; the properties it checks are in its docs.

libfuzzer_sys::fuzz_target!(
    init: dpow_testkit::fuzz::init("envelope_checkpoint"),
    |data: &[u8]| dpow_testkit::fuzz::checkpoint(data)
);
