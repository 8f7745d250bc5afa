#![no_main]
//! The fuzz target for `dpow_testkit::fuzz::sync_response`; the properties it checks are in its docs.

libfuzzer_sys::fuzz_target!(
    init: dpow_testkit::fuzz::init("sync_response"),
    |data: &[u8]| dpow_testkit::fuzz::sync_response(data)
);
