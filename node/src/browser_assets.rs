//! The browser worker's files, built into the binary: the WebAssembly kernel (compiled from
//! `wasm/kernel.rs` by `build.rs`) and the ES modules that run it (`assets/browser/`).
//!
//! A page loads `solver.js` as a module; it fetches `worker.js` and `dpow.wasm` from the same
//! directory, and `webgl.js` for the GPU path. The files' API is described in docs/browser.md.
//! A binary built without the wasm32 toolchain has an empty [`WASM`] and says why in
//! [`WASM_MISSING`].

/// One file a node serves to browser workers.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The file's name, as `solver.js` refers to it (relative to its own URL).
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

/// The kernel: Nano work in WebAssembly SIMD. Empty when this binary was built without the
/// wasm32 toolchain (see [`WASM_MISSING`]).
pub const WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dpow.wasm"));

/// Why this binary has no browser worker (the build's words), or `None` when it has one.
pub const WASM_MISSING: Option<&str> = option_env!("DPOW_WASM_MISSING");

/// The solver API a page imports: `createSolver`, `createWebglSolver`, `pickBackend`.
pub const SOLVER_JS: &str = include_str!("../assets/browser/solver.js");

/// The Web Worker that runs the kernel, one per thread.
pub const WORKER_JS: &str = include_str!("../assets/browser/worker.js");

/// The WebGL2 solver (a fragment shader, one nonce per pixel).
pub const WEBGL_JS: &str = include_str!("../assets/browser/webgl.js");

const JS: &str = "text/javascript; charset=utf-8";

/// Every file, to be served side by side under one path (e.g. `/browser/NAME`).
pub const FILES: [Asset; 4] = [
    Asset {
        name: "dpow.wasm",
        content_type: "application/wasm",
        bytes: WASM,
    },
    Asset {
        name: "solver.js",
        content_type: JS,
        bytes: SOLVER_JS.as_bytes(),
    },
    Asset {
        name: "worker.js",
        content_type: JS,
        bytes: WORKER_JS.as_bytes(),
    },
    Asset {
        name: "webgl.js",
        content_type: JS,
        bytes: WEBGL_JS.as_bytes(),
    },
];

/// Whether this binary carries the browser worker's kernel.
pub fn has_browser_worker() -> bool {
    !WASM.is_empty()
}

/// The file called `name`, if there is one.
pub fn file(name: &str) -> Option<&'static Asset> {
    FILES.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_found_by_name_and_the_kernel_is_wasm_or_explained() {
        for a in &FILES {
            assert_eq!(file(a.name).map(|f| f.name), Some(a.name));
        }
        assert!(file("../Cargo.toml").is_none());
        if has_browser_worker() {
            // The WebAssembly magic number and version 1.
            assert_eq!(&WASM[..8], b"\0asm\x01\0\0\0");
            assert!(WASM_MISSING.is_none());
        } else {
            assert!(WASM_MISSING.is_some_and(|w| !w.is_empty()));
        }
        assert!(SOLVER_JS.contains("export async function createSolver"));
    }
}
