//! Builds the browser worker's WebAssembly kernel (`wasm/kernel.rs`) into `OUT_DIR/dpow.wasm`,
//! which `src/browser_assets.rs` embeds.
//!
//! The kernel needs a Rust toolchain with the wasm32 standard library. rustup's toolchains on
//! the project's machines have none, so this uses Debian's (`apt-get install rustc
//! libstd-rust-dev-wasm32 lld`, rustc 1.63 at /usr/bin/rustc), or the one `DPOW_WASM_RUSTC`
//! names. When it is missing or fails, the build still succeeds (a volunteer installing the
//! light worker needs no browser worker): it warns, embeds an empty file and sets
//! `DPOW_WASM_MISSING` to the reason, so the binary can say it was built without the browser
//! worker. With `DPOW_REQUIRE_WASM=1` (as `scripts/test.sh` sets it) that is an error instead.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's rustc, the one with a wasm32 standard library.
const DEFAULT_RUSTC: &str = "/usr/bin/rustc";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let kernel = manifest.join("../wasm/kernel.rs");
    let out = out_dir.join("dpow.wasm");
    println!("cargo:rerun-if-changed={}", kernel.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DPOW_WASM_RUSTC");
    println!("cargo:rerun-if-env-changed=DPOW_REQUIRE_WASM");

    let rustc = env::var("DPOW_WASM_RUSTC").unwrap_or_else(|_| DEFAULT_RUSTC.to_string());
    if let Err(why) = compile(&rustc, &kernel, &out) {
        let required = env::var("DPOW_REQUIRE_WASM").is_ok_and(|v| !v.is_empty() && v != "0");
        if required {
            panic!("DPOW_REQUIRE_WASM is set and the browser worker's kernel did not build: {why}");
        }
        println!(
            "cargo:warning=built without the browser worker ({why}); install it with \
             `apt-get install rustc libstd-rust-dev-wasm32 lld`"
        );
        fs::write(&out, b"").expect("write an empty dpow.wasm");
        println!("cargo:rustc-env=DPOW_WASM_MISSING={why}");
    }
}

/// Compile `kernel` to `out` with `rustc`, or say why not.
fn compile(rustc: &str, kernel: &Path, out: &Path) -> Result<(), String> {
    if !kernel.exists() {
        return Err(format!("{} is missing", kernel.display()));
    }
    if !Path::new(rustc).exists() {
        return Err(format!("no {rustc}"));
    }
    let sysroot = Command::new(rustc)
        .arg("--print=sysroot")
        .output()
        .map_err(|e| format!("{rustc} does not run: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if !Path::new(&sysroot)
        .join("lib/rustlib/wasm32-unknown-unknown")
        .exists()
    {
        return Err(format!(
            "{rustc} has no wasm32-unknown-unknown standard library"
        ));
    }
    let result = Command::new(rustc)
        .args([
            "--edition=2021",
            "--crate-type=cdylib",
            "--crate-name=dpow_wasm",
            "--target=wasm32-unknown-unknown",
            "-Copt-level=3",
            "-Cpanic=abort",
            "-Ctarget-feature=+simd128",
            "-Cstrip=symbols",
        ])
        .arg(kernel)
        .arg("-o")
        .arg(out)
        // Cargo's own settings for the host build are not for this compiler.
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .map_err(|e| format!("{rustc} does not run: {e}"))?;
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        let first_error = stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or("no error message");
        return Err(format!("{rustc} failed: {first_error}"));
    }
    Ok(())
}
