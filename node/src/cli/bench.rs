//! `dpow bench`: hash rate of every solver backend per thread count, with an optional baseline.
//!
//! The baseline (`--compare`) is what the reference Nano work server does on a CPU: a loop that
//! runs the general-purpose `blake2` crate once per nonce. It runs in the same process, on the
//! same threads, for the same time as each backend, so the ratio is a fair one.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};
use clap::Args;
use dpow_solver::cpu::{self, Backend};
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
}

struct Row {
    name: String,
    threads: usize,
    hps: f64,
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

/// Run `dpow bench`.
pub(super) fn run(a: BenchArgs, out: Output) -> anyhow::Result<ExitCode> {
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
    let mut plan: Vec<(Option<Backend>, usize)> = Vec::new();
    for &t in &threads {
        if a.compare {
            plan.push((None, t));
        }
        for &b in &backends {
            plan.push((Some(b), t));
        }
    }
    let mut rows = Vec::new();
    for (i, (backend, t)) in plan.iter().enumerate() {
        let label = backend.map_or("plain blake2 loop".to_string(), |b| format!("cpu {b}"));
        out.progress(&format!(
            "[{}/{}] measuring {label} on {t} thread(s) for {:.1}s",
            i + 1,
            plan.len(),
            a.seconds
        ));
        let hps = match backend {
            None => plain_loop_rate(*t, duration),
            Some(b) => cpu::measure_rate(*b, *t, duration)?,
        };
        rows.push(Row {
            name: label,
            threads: *t,
            hps,
        });
    }
    out.progress_done();
    print_summary(&rows, out)?;
    Ok(ExitCode::SUCCESS)
}

fn print_summary(rows: &[Row], out: Output) -> anyhow::Result<()> {
    let baseline = |threads: usize| {
        rows.iter()
            .find(|r| r.name.starts_with("plain") && r.threads == threads)
            .map(|r| r.hps)
    };
    let single = |name: &str| {
        rows.iter()
            .find(|r| r.name == name && r.threads == 1)
            .map(|r| r.hps)
    };
    let mut human = format!(
        "{:<22} {:>7} {:>12} {:>12} {:>9} {:>9}\n",
        "backend", "threads", "rate", "per thread", "vs plain", "scaling"
    );
    let mut json_rows = Vec::new();
    for r in rows {
        let per_thread = r.hps / r.threads as f64;
        let vs_plain = baseline(r.threads).map(|b| r.hps / b);
        let scaling = single(&r.name).map(|s| r.hps / s);
        human.push_str(&format!(
            "{:<22} {:>7} {:>12} {:>12} {:>9} {:>9}\n",
            r.name,
            r.threads,
            rate(r.hps),
            rate(per_thread),
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
        }));
    }
    out.emit(&human, &json!({ "results": json_rows }))?;
    Ok(())
}
