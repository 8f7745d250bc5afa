//! The `dpow` command line: one subcommand enum, a module per subcommand.

mod backup;
mod bench;
#[cfg(feature = "ledger")]
mod bench_catchup;
#[cfg(feature = "ledger")]
mod bench_ledger;
#[cfg(feature = "ledger")]
mod bench_live;
mod client;
mod confirm;
mod gpu;
mod keys;
mod ledger;
mod node;
mod registry;
mod registry_seq;
mod request;
mod status;
mod work;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::output::Output;

/// Exit status for an error (bad input, I/O failure): the message is on stderr.
pub const EXIT_ERROR: u8 = 2;
/// Exit status of `dpow work validate` when the work does not meet the threshold.
pub const EXIT_INVALID: u8 = 1;

/// dpow: distributed Nano proof of work over a peer-to-peer network.
///
/// Services sign work requests; workers solve them on CPU or GPU; every peer verifies what it
/// forwards; signed receipts keep the books. This tool runs a node and does everything around
/// it: generate and validate work locally, manage keys, measure hash rates.
#[derive(Debug, Parser)]
#[command(name = "dpow", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Options for every command.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Print results as JSON (for scripts) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log filter, e.g. `info` or `dpow_node=debug,libp2p=info` (RUST_LOG also works).
    #[arg(long, global = true, env = "DPOW_LOG", value_name = "FILTER")]
    pub log: Option<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate or validate Nano work locally.
    #[command(subcommand)]
    Work(work::WorkCommand),
    /// Create and inspect ed25519 keys and nano_ addresses.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Measure hash rates of every solver backend (and compare with a plain blake2 loop).
    Bench(bench::BenchArgs),
    /// Run a node: join a network, relay and validate, and work or serve if asked.
    Node(Box<node::NodeArgs>),
    /// Ask the network for work as a registered service (one request, or a batch with a summary).
    Request(Box<request::RequestArgs>),
    /// Registrar actions: register services, grant credits, ban and unban; list the registry.
    Registry(Box<registry::RegistryArgs>),
    /// The books: payouts, balances, digests and receipts, recomputed from verified receipts.
    Ledger(Box<ledger::LedgerArgs>),
    /// OpenCL devices: list what this machine has (build with `--features opencl`).
    #[command(subcommand)]
    Gpu(gpu::GpuCommand),
    /// A running node's worker: devices and rates, results sent, won, lost and rejected,
    /// credits per epoch (read from its --http address; exit status 1 if it does not work).
    Status(status::StatusArgs),
}

/// Set up logging to stderr: `--log`, else `RUST_LOG`, else warnings only.
pub fn init_logging(global: &Global) {
    use tracing_subscriber::EnvFilter;
    let filter = global
        .log
        .as_deref()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Print an error and its causes to stderr.
pub fn report_error(e: &anyhow::Error) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "error: {e}");
    for cause in e.chain().skip(1) {
        let _ = write!(err, ": {cause}");
    }
    let _ = writeln!(err);
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let out = Output {
        json: cli.global.json,
    };
    match cli.command {
        Command::Work(c) => work::run(c, out),
        Command::Keys(c) => keys::run(c, out),
        Command::Bench(a) => bench::run(a, out),
        Command::Gpu(c) => gpu::run(c, out),
        Command::Node(a) => node::run(*a, out),
        Command::Request(a) => request::run(*a, out),
        Command::Registry(a) => registry::run(*a, out),
        Command::Ledger(a) => ledger::run(*a, out),
        Command::Status(a) => status::run(a, out),
    }
}
