//! Shared helpers of the OpenCL tests: skipping without OpenCL, one solver per test binary, the
//! Nano vectors and an independent reference hash.
#![allow(dead_code, unreachable_pub, clippy::print_stderr)]

use std::sync::OnceLock;

use dpow_gpu::{DeviceSpec, GpuSolver};
use dpow_protocol::{Root, Work};

/// The device the tests use: `DPOW_TEST_GPU` (`P:D`), else the first one listed.
pub fn test_spec() -> Result<DeviceSpec, String> {
    if let Ok(s) = std::env::var("DPOW_TEST_GPU") {
        return s.parse().map_err(|e| format!("DPOW_TEST_GPU: {e}"));
    }
    let devices = dpow_gpu::list_devices().map_err(|e| e.to_string())?;
    devices
        .first()
        .map(|d| d.spec())
        .ok_or_else(|| "no device listed".to_string())
}

/// Whether OpenCL tests must run (CI sets `DPOW_REQUIRE_OPENCL=1`).
pub fn required() -> bool {
    std::env::var("DPOW_REQUIRE_OPENCL").is_ok_and(|v| v == "1")
}

/// Skip (return `None`, saying why) without OpenCL, or fail if it is required.
pub fn skip_or_fail(why: &str) -> Option<&'static GpuSolver> {
    assert!(!required(), "DPOW_REQUIRE_OPENCL=1 but {why}");
    eprintln!("skipping OpenCL test: {why}");
    None
}

/// The test device, opened once per test binary; `None` (after printing why) when there is no
/// OpenCL here, unless `DPOW_REQUIRE_OPENCL=1`, which turns that into a failure.
pub fn solver() -> Option<&'static GpuSolver> {
    static SOLVER: OnceLock<Result<GpuSolver, String>> = OnceLock::new();
    let opened = SOLVER.get_or_init(|| {
        let spec = test_spec()?;
        GpuSolver::new(spec).map_err(|e| e.to_string())
    });
    match opened {
        Ok(s) => Some(s),
        Err(why) => skip_or_fail(why),
    }
}

// The work value by the reference check (the `blake2` crate), independently of `dpow_protocol`.
#[allow(unused_imports)] // each test binary uses part of this module
pub use dpow_testkit::reference::work_value as reference_value;

/// A small deterministic generator for roots and nonces (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn root(&mut self) -> Root {
        let mut r = [0u8; 32];
        for chunk in r.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        Root(r)
    }
}

/// One work vector of `testdata/nano.json`.
pub struct Vector {
    pub root: Root,
    pub work: Work,
    pub value: u64,
    pub solved_for: Option<u64>,
    pub valid_receive: bool,
    pub valid_send: bool,
}

/// The work vectors of `testdata/nano.json`.
pub fn vectors() -> Vec<Vector> {
    let json: serde_json::Value =
        serde_json::from_str(include_str!("../../../testdata/nano.json")).expect("vectors parse");
    let hex64 =
        |v: &serde_json::Value| u64::from_str_radix(v.as_str().expect("hex"), 16).expect("hex");
    json["work"]
        .as_array()
        .expect("work vectors")
        .iter()
        .map(|v| Vector {
            root: v["root"].as_str().expect("root").parse().expect("root hex"),
            work: v["work"].as_str().expect("work").parse().expect("work hex"),
            value: hex64(&v["value"]),
            solved_for: v["solved_for"].as_str().map(|_| hex64(&v["solved_for"])),
            valid_receive: v["valid_receive"].as_bool().expect("bool"),
            valid_send: v["valid_send"].as_bool().expect("bool"),
        })
        .collect()
}

/// Send-threshold work found with this crate and checked with Python's `hashlib.blake2b`:
/// (root, work, value). The published vectors have none valid for send.
pub const SEND_VECTORS: [(&str, &str, u64); 3] = [
    (
        "7C11C05DFF7B9C8F9A4CBD787F6C813EBE559C854D6E2AAD4EBBD0C6D548D393",
        "000000002674e022",
        0xfffffff8de18e4a6,
    ),
    (
        "C5F96E75C454FA23D827923C76E6B5D17FA2DD80F7A7E06D7C1C400911D31690",
        "0000000016fec0b3",
        0xfffffff86449faff,
    ),
    (
        "A8FF606EB0ECC1BE9F51F7F7C0FA631639AAE99ACA8F3B30AD77224D67E803E1",
        "0000000025de80cc",
        0xfffffffd3629ca11,
    ),
];

/// The nonce with the highest work value among the `count` nonces from `start` (wrapping),
/// computed on the CPU, and that value.
pub fn best_in_range(root: &Root, start: u64, count: u64) -> (Work, u64) {
    (0..count)
        .map(|i| {
            let w = Work(start.wrapping_add(i));
            (w, dpow_protocol::work_value(root, w).0)
        })
        .max_by_key(|&(_, v)| v)
        .expect("count > 0")
}

/// Whether `work` lies in the `count` nonces from `start` (wrapping).
pub fn in_range(work: Work, start: u64, count: u64) -> bool {
    work.0.wrapping_sub(start) < count
}
