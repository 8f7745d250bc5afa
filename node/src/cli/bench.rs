//! `dpow bench`: hash rate of every solver backend per thread count, with an optional baseline.
//!
//! The baseline (`--compare`) is what the reference Nano work server does on a CPU: a loop that
//! runs the general-purpose `blake2` crate once per nonce. It runs in the same process, on the
//! same threads, for the same time as each backend, so the ratio is a fair one.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};
use clap::Args;
use dpow_gpu::{DeviceSpec, GpuError, GpuOptions, GpuSolver};
use dpow_solver::cpu::{self, Backend};
use dpow_solver::dispatch;
use serde_json::json;

use crate::output::{Output, rate};

/// `dpow bench`
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Seconds to measure each configuration.
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    pub seconds: f64,
    /// Thread counts to measure, comma-separated (default: 1 and every core).
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    pub threads: Vec<usize>,
    /// Backends to measure, comma-separated (default: every one this CPU supports).
    #[arg(long, value_delimiter = ',', value_name = "NAME,..")]
    pub backend: Vec<Backend>,
    /// Also measure a plain loop over the blake2 crate, as the reference work server does.
    #[arg(long)]
    pub compare: bool,
    /// OpenCL devices to measure, `P:D` or `all` (default: every device `dpow gpu list` shows,
    /// in a build with OpenCL). Repeatable.
    #[arg(long = "gpu", value_name = "P:D|all")]
    pub gpus: Vec<DeviceSpec>,
    /// Do not measure OpenCL devices.
    #[arg(long, conflicts_with = "gpus")]
    pub no_gpu: bool,
    /// Measure the ledger instead of hashing: receipt ingest per core, recomputing balances
    /// over this many receipts (e.g. 1000000), RocksDB bytes per receipt.
    #[arg(long, value_name = "RECEIPTS")]
    pub ledger: Option<u64>,
    /// Measure catch-up instead: how long a node starting empty takes to fetch and verify
    /// this many receipts from a peer over loopback.
    #[arg(long, value_name = "RECEIPTS", conflicts_with = "ledger")]
    pub catch_up: Option<u64>,
    /// With --catch-up: spread node A's receipts over 30 closed days (final epochs, each
    /// checkpointed by the registrar) instead of today.
    #[arg(long, requires = "catch_up")]
    pub history: bool,
    /// With --catch-up: node B is a light ledger (`dpow node --adopt-checkpoints`), which
    /// keeps checkpointed epochs as their checkpoints. Implies --history.
    #[arg(long, requires = "catch_up")]
    pub light: bool,
    /// Measure live ingest instead: a peer publishes receipts on gossip at this many a
    /// second and the node takes them; reports its event loop's turn times under that load.
    #[arg(long, value_name = "PER_SECOND", conflicts_with_all = ["ledger", "catch_up"])]
    pub live: Option<u64>,
    /// With --live: for how long the receipts are published.
    #[arg(long, value_name = "SECONDS", default_value_t = 20, requires = "live")]
    pub live_seconds: u64,
    /// With --ledger, --catch-up or --live: where to create the scratch databases (default: the
    /// system's temporary directory). They are deleted afterwards.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
    /// The second half of `--ledger`, in a fresh process so its memory is the books' alone:
    /// open the filled database, answer balances and a payout, take live receipts.
    #[arg(long, value_name = "DIR", hide = true)]
    pub ledger_reopen: Option<std::path::PathBuf>,
}

/// One configuration to measure.
enum Plan {
    Plain(usize),
    Cpu(Backend, usize),
    Gpu(Box<GpuSolver>),
}

struct Row {
    name: String,
    /// CPU threads; `None` for an OpenCL device.
    threads: Option<usize>,
    hps: f64,
    /// The OpenCL device's description.
    device: Option<String>,
}

/// Hashes per second of the plain loop: one `blake2` hasher per nonce, `threads` threads.
fn plain_loop_rate(threads: usize, duration: Duration) -> f64 {
    let stop = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let root = [0x5au8; 32];
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, total) = (&stop, &total);
            s.spawn(move || {
                let mut nonce = (t as u64) << 48;
                let mut done = 0u64;
                let mut best = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..4096 {
                        let mut h = Blake2b::<U8>::new();
                        h.update(nonce.to_le_bytes());
                        h.update(root);
                        let mut v = [0u8; 8];
                        v.copy_from_slice(&h.finalize());
                        best = best.max(u64::from_le_bytes(v));
                        nonce = nonce.wrapping_add(1);
                    }
                    done += 4096;
                }
                std::hint::black_box(best);
                total.fetch_add(done, Ordering::Relaxed);
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    total.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Run `f` on a scratch directory under `base` (the system's temporary directory if none),
/// removed afterwards.
#[cfg(feature = "ledger")]
fn in_scratch(
    base: Option<&std::path::Path>,
    what: &str,
    f: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let base = base.map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
    let dir = base.join(format!("dpow-bench-{what}-{}", std::process::id()));
    let r = f(&dir);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), "removing the scratch database: {e}");
    }
    r.map(|()| ExitCode::SUCCESS)
}

/// Run `dpow bench`.
pub(super) fn run(a: BenchArgs, out: Output) -> anyhow::Result<ExitCode> {
    #[cfg(not(feature = "ledger"))]
    if a.ledger.is_some() || a.catch_up.is_some() || a.live.is_some() {
        bail!(
            "--ledger, --catch-up and --live measure the RocksDB ledger, which this light build leaves out"
        );
    }
    #[cfg(feature = "ledger")]
    if let Some(dir) = &a.ledger_reopen {
        return super::bench_ledger::reopen(dir, &out).map(|()| ExitCode::SUCCESS);
    }
    #[cfg(feature = "ledger")]
    if let Some(rate) = a.live {
        if !(100..=100_000).contains(&rate) || !(1..=600).contains(&a.live_seconds) {
            bail!("--live takes 100 to 100000 receipts a second, --live-seconds 1 to 600");
        }
        return in_scratch(a.dir.as_deref(), "live", |dir| {
            super::bench_live::run(rate, a.live_seconds, dir, &out)
        });
    }
    #[cfg(feature = "ledger")]
    if let Some((n, catch_up)) = a
        .ledger
        .map(|n| (n, false))
        .or(a.catch_up.map(|n| (n, true)))
    {
        if n < 1000 {
            bail!("--ledger and --catch-up need at least 1000 receipts");
        }
        return in_scratch(a.dir.as_deref(), "ledger", |dir| {
            if catch_up {
                let history = if a.light {
                    super::bench_catchup::History::Light
                } else if a.history {
                    super::bench_catchup::History::Full
                } else {
                    super::bench_catchup::History::None
                };
                super::bench_catchup::run(n, history, dir, &out)
            } else {
                super::bench_ledger::run(n, dir, &out)
            }
        });
    }
    if !(a.seconds.is_finite() && a.seconds > 0.0 && a.seconds <= 600.0) {
        bail!("--seconds must be between 0 and 600");
    }
    let duration = Duration::from_secs_f64(a.seconds);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut threads = a.threads.clone();
    if threads.is_empty() {
        threads = if cores > 1 { vec![1, cores] } else { vec![1] };
    }
    if threads.contains(&0) {
        bail!("--threads values must be at least 1");
    }
    let backends = if a.backend.is_empty() {
        Backend::available()
    } else {
        a.backend.clone()
    };
    for b in &backends {
        if !b.is_supported() {
            bail!(
                "backend {b} is not supported by this CPU (supported: {:?})",
                Backend::available()
            );
        }
    }
    let mut plan = Vec::new();
    for &t in &threads {
        if a.compare {
            plan.push(Plan::Plain(t));
        }
        for &b in &backends {
            plan.push(Plan::Cpu(b, t));
        }
    }
    if !a.no_gpu {
        plan.extend(
            open_gpus(&a.gpus)?
                .into_iter()
                .map(|g| Plan::Gpu(Box::new(g))),
        );
    }
    let mut rows = Vec::new();
    for (i, p) in plan.iter().enumerate() {
        let (label, threads) = match p {
            Plan::Plain(t) => ("plain blake2 loop".to_string(), Some(*t)),
            Plan::Cpu(b, t) => (format!("cpu {b}"), Some(*t)),
            Plan::Gpu(g) => (format!("opencl {}", g.info().spec()), None),
        };
        out.progress(&format!(
            "[{}/{}] measuring {label}{} for {:.1}s",
            i + 1,
            plan.len(),
            threads.map_or(String::new(), |t| format!(" on {t} thread(s)")),
            a.seconds
        ));
        let hps = match p {
            Plan::Plain(t) => plain_loop_rate(*t, duration),
            Plan::Cpu(b, t) => cpu::measure_rate(*b, *t, duration)?,
            Plan::Gpu(g) => dispatch::measure_rate(g.as_ref(), duration)
                .with_context(|| format!("measuring {}", g.info()))?,
        };
        let device = match p {
            Plan::Gpu(g) => Some(g.info().to_string()),
            _ => None,
        };
        rows.push(Row {
            name: label,
            threads,
            hps,
            device,
        });
    }
    out.progress_done();
    print_summary(&rows, cores, out)?;
    Ok(ExitCode::SUCCESS)
}

/// The OpenCL devices to measure: those named, or every one listed. No OpenCL in this build or
/// no driver on this machine is not an error unless devices were named: a note says why.
fn open_gpus(specs: &[DeviceSpec]) -> anyhow::Result<Vec<GpuSolver>> {
    let named = !specs.is_empty();
    let specs = if named {
        specs.to_vec()
    } else {
        vec![DeviceSpec::All]
    };
    match dpow_gpu::open_all(&specs, &GpuOptions::default()) {
        Ok(g) => Ok(g),
        Err(e @ (GpuError::NotCompiled | GpuError::NoPlatform(_) | GpuError::NoDevice(_)))
            if !named =>
        {
            tracing::info!("no OpenCL devices measured: {e}");
            Ok(Vec::new())
        }
        Err(e) => Err(anyhow::Error::new(e).context("opening OpenCL devices")),
    }
}

fn print_summary(rows: &[Row], cores: usize, out: Output) -> anyhow::Result<()> {
    let baseline = |threads: Option<usize>| {
        rows.iter()
            .find(|r| r.name.starts_with("plain") && r.threads == threads)
            .map(|r| r.hps)
    };
    let single = |name: &str| {
        rows.iter()
            .find(|r| r.name == name && r.threads == Some(1))
            .map(|r| r.hps)
    };
    let mut human = format!(
        "{:<22} {:>7} {:>12} {:>12} {:>9} {:>9}\n",
        "backend", "threads", "rate", "per thread", "vs plain", "scaling"
    );
    let mut json_rows = Vec::new();
    for r in rows {
        let per_thread = r.threads.map(|t| r.hps / t as f64);
        // An OpenCL device is compared with the plain loop on every core.
        let vs_plain = baseline(r.threads)
            .or_else(|| r.threads.is_none().then(|| baseline(Some(cores))).flatten())
            .map(|b| r.hps / b);
        let scaling = single(&r.name).map(|s| r.hps / s);
        human.push_str(&format!(
            "{:<22} {:>7} {:>12} {:>12} {:>9} {:>9}\n",
            r.name,
            r.threads.map_or("-".to_string(), |t| t.to_string()),
            rate(r.hps),
            per_thread.map_or("-".to_string(), rate),
            vs_plain.map_or("-".to_string(), |x| format!("{x:.2}x")),
            scaling.map_or("-".to_string(), |x| format!("{x:.2}x")),
        ));
        json_rows.push(json!({
            "backend": r.name,
            "threads": r.threads,
            "hashes_per_second": r.hps,
            "per_thread": per_thread,
            "vs_plain": vs_plain,
            "scaling_from_one_thread": scaling,
            "device": r.device,
        }));
    }
    for r in rows {
        if let Some(d) = &r.device {
            human.push_str(&format!("{}: {d}\n", r.name));
        }
    }
    out.emit(&human, &json!({ "results": json_rows }))?;
    Ok(())
}
