#![no_main]
//! The fuzz target for `dpow_testkit::fuzz::result_delivery`; the properties it checks are in its docs.

libfuzzer_sys::fuzz_target!(
    init: dpow_testkit::fuzz::init("result_delivery"),
    |data: &[u8]| dpow_testkit::fuzz::result_delivery(data)
);
