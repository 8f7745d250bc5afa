#![no_main]
//! The fuzz target for `dpow_testkit::fuzz::http`; the properties it checks are in its docs.

libfuzzer_sys::fuzz_target!(
    init: dpow_testkit::fuzz::init("http"),
    |data: &[u8]| dpow_testkit::fuzz::http(data)
);
