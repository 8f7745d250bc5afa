//! What the `dpow` binary's integration tests share.

use std::process::{Command, Output};

/// Run the `dpow` binary with `args` to completion.
pub(crate) fn dpow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dpow"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the dpow binary runs")
}
