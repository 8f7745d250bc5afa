//! Device selection: `--gpu PLATFORM:DEVICE` and `--gpu all`, and what `dpow gpu list` prints.
//!
//! Parsing needs no OpenCL, so the CLI can validate its flags in every build; resolving a spec
//! to devices lives in the OpenCL half of the crate.

use std::fmt;
use std::str::FromStr;

use crate::GpuError;

/// Which OpenCL device(s) to use, as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    /// Every device of every platform.
    All,
    /// One device: indices as `dpow gpu list` (and `clinfo -l`) number them.
    Index {
        /// Platform index.
        platform: usize,
        /// Device index within the platform.
        device: usize,
    },
}

impl DeviceSpec {
    /// The spec for one device.
    pub fn index(platform: usize, device: usize) -> Self {
        DeviceSpec::Index { platform, device }
    }
}

impl FromStr for DeviceSpec {
    type Err = GpuError;

    /// `all` (any case), or `PLATFORM:DEVICE` with decimal indices such as `0:1`.
    fn from_str(s: &str) -> Result<Self, GpuError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("all") {
            return Ok(DeviceSpec::All);
        }
        let bad = || GpuError::BadSpec(s.to_string());
        let (p, d) = t.split_once(':').ok_or_else(bad)?;
        let index = |x: &str| {
            if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            x.parse::<usize>().map_err(|_| bad())
        };
        Ok(DeviceSpec::Index {
            platform: index(p)?,
            device: index(d)?,
        })
    }
}

impl fmt::Display for DeviceSpec {
    /// The form [`FromStr`] reads: `all` or `P:D`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::All => f.write_str("all"),
            DeviceSpec::Index { platform, device } => write!(f, "{platform}:{device}"),
        }
    }
}

/// One OpenCL device as `dpow gpu list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Platform index (the `P` of `P:D`).
    pub platform: usize,
    /// Device index within the platform (the `D` of `P:D`).
    pub device: usize,
    /// Platform name, e.g. "Portable Computing Language".
    pub platform_name: String,
    /// Device name, e.g. "NVIDIA GeForce RTX 3060" or "pthread-skylake-avx512-…".
    pub name: String,
    /// Device type: "gpu", "cpu", "accelerator" or "other".
    pub kind: String,
    /// Compute units (cores or SMs).
    pub compute_units: u32,
    /// Largest work-group the device accepts.
    pub max_work_group_size: usize,
    /// Global memory in bytes.
    pub global_mem_bytes: u64,
    /// The device's preferred vector width for 64-bit integers (8 on PoCL with AVX-512, 1 on
    /// most GPUs): how many nonces the kernel hashes at once per work-item.
    pub long_vector_width: u32,
}

impl DeviceInfo {
    /// This device's spec (`P:D`).
    pub fn spec(&self) -> DeviceSpec {
        DeviceSpec::index(self.platform, self.device)
    }
}

impl fmt::Display for DeviceInfo {
    /// One line: `0:1  gpu  NVIDIA GeForce RTX 3060 (NVIDIA CUDA), 28 compute units, …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}  {:<11}  {} ({}), {} compute units, work-group up to {}, {} MiB",
            self.spec(),
            self.kind,
            self.name,
            self.platform_name,
            self.compute_units,
            self.max_work_group_size,
            self.global_mem_bytes / (1024 * 1024)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (s, spec) in [
            ("all", DeviceSpec::All),
            ("ALL", DeviceSpec::All),
            ("0:0", DeviceSpec::index(0, 0)),
            (" 1:12 ", DeviceSpec::index(1, 12)),
        ] {
            let parsed: DeviceSpec = s.parse().expect("valid spec");
            assert_eq!(parsed, spec);
            assert_eq!(parsed.to_string().parse::<DeviceSpec>().ok(), Some(spec));
        }
    }

    #[test]
    fn rejects_junk_with_a_clear_message() {
        for s in [
            "", "0", "0:", ":1", "a:b", "0:1:2", "-1:0", "+1:0", "0x1:0", "gpu",
        ] {
            let err = s.parse::<DeviceSpec>().expect_err(s);
            let msg = err.to_string();
            assert!(msg.contains("PLATFORM:DEVICE"), "{msg}");
            assert!(msg.contains(&format!("`{s}`")), "{msg}");
        }
    }
}
