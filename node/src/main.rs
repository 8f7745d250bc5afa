//! `dpow`: the command-line tool and node. Parsing and dispatch live in `dpow_node::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = dpow_node::cli::Cli::parse();
    dpow_node::cli::init_logging(&cli.global);
    match dpow_node::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            dpow_node::cli::report_error(&e);
            ExitCode::from(dpow_node::cli::EXIT_ERROR)
        }
    }
}
