//! `dpow-testnet`: a whole dpow network on loopback, as separate `dpow` processes.
//!
//! Started by `testnet/run.sh`. It makes keys and a genesis under a temporary directory, starts
//! a registrar/bootstrap node, a service node and N workers, registers the service, submits M
//! requests across block kinds through the service node, checks every answer, prints a
//! summary, and stops every process (or, with `--keep`, waits for Ctrl-C first).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a console program: its output is the point

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = dpow_testnet::procs::Args::parse();
    match dpow_testnet::procs::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("testnet: {e}");
            for c in e.chain().skip(1) {
                eprint!(": {c}");
            }
            eprintln!();
            ExitCode::from(1)
        }
    }
}
