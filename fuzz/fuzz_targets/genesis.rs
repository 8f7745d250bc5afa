#![no_main]
//! The fuzz target for `dpow_testkit::fuzz::genesis`; the properties it checks are in its docs.

libfuzzer_sys::fuzz_target!(
    init: dpow_testkit::fuzz::init("genesis"),
    |data: &[u8]| dpow_testkit::fuzz::genesis(data)
);
