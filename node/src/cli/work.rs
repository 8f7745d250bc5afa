//! `dpow work generate` and `dpow work validate`: Nano work on this machine, no network.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand};
use dpow_protocol::{BlockKind, Difficulty, Multiplier, Profile, Root, Work, work_value};
use dpow_solver::{Control, Solver};
use serde_json::json;

use super::EXIT_INVALID;
use crate::devices::DeviceArgs;
use crate::output::{Output, rate};

/// `dpow work ...`
#[derive(Debug, Subcommand)]
pub enum WorkCommand {
    /// Find work for a block hash (root) on this machine's CPU (and GPUs with --gpu).
    ///
    /// The threshold is, in order of precedence: --difficulty, --multiplier (over the profile's
    /// send threshold, as Nano's work_generate takes it), --kind (the profile's threshold for
    /// that block kind), or else the profile's send threshold.
    Generate(GenerateArgs),
    /// Check work against a threshold. Exits 0 if valid, 1 if not.
    Validate(ValidateArgs),
}

/// Which threshold to use.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Explicit threshold, 16 hex digits (e.g. fffffff800000000).
    #[arg(long, group = "target", value_name = "HEX")]
    pub difficulty: Option<Difficulty>,
    /// Multiplier over the profile's send threshold (e.g. 1.5).
    #[arg(long, group = "target", value_name = "X")]
    pub multiplier: Option<Multiplier>,
    /// Block kind: send, receive, open, change or epoch.
    #[arg(long, group = "target", value_name = "KIND")]
    pub kind: Option<BlockKind>,
    /// Difficulty profile: nano (default), banano, multiplier-proposal, test.
    #[arg(long, default_value = "nano", value_name = "NAME")]
    pub profile: String,
}

impl TargetArgs {
    /// The threshold asked for, and the profile it was read against.
    pub fn resolve(&self) -> anyhow::Result<(Difficulty, Profile)> {
        let profile = Profile::by_name(&self.profile)?;
        let base = profile.threshold(BlockKind::Send);
        let d = if let Some(d) = self.difficulty {
            d
        } else if let Some(m) = self.multiplier {
            Difficulty::from_multiplier(m, base)
        } else if let Some(k) = self.kind {
            profile.threshold(k)
        } else {
            base
        };
        Ok((d, profile))
    }
}

/// `dpow work generate`
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The block root: previous block hash, or the account's public key for an open block.
    #[arg(long, value_name = "HASH")]
    pub hash: Root,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub devices: DeviceArgs,
    /// Give up after this many seconds (default: never).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
}

/// `dpow work validate`
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The block root.
    #[arg(long, value_name = "HASH")]
    pub hash: Root,
    /// The work, 16 hex digits.
    #[arg(long, value_name = "HEX")]
    pub work: Work,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Run a `dpow work` command.
pub(super) fn run(cmd: WorkCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        WorkCommand::Generate(a) => generate(a, out),
        WorkCommand::Validate(a) => validate(a, out),
    }
}

fn generate(a: GenerateArgs, out: Output) -> anyhow::Result<ExitCode> {
    let (threshold, profile) = a.target.resolve()?;
    let solver = a.devices.dispatcher()?;
    let timeout = match a.timeout {
        Some(s) if !(s.is_finite() && s > 0.0) => {
            bail!("--timeout must be a positive number of seconds")
        }
        Some(s) => Some(Duration::from_secs_f64(s)),
        None => None,
    };
    let control = Control::new();
    let started = Instant::now();
    let expected = threshold.expected_hashes();
    let (found, elapsed) = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (solver, control, hash) = (&solver, &control, &a.hash);
        s.spawn(move || {
            let r = solver.solve(hash, threshold, control);
            // The time is taken here, not when the progress loop next wakes.
            let _ = tx.send((r, started.elapsed()));
        });
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok((r, elapsed)) => return Ok::<_, anyhow::Error>((r?, elapsed)),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the solver thread panicked")
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            let secs = started.elapsed().as_secs_f64();
            let done = control.hashes() as f64;
            out.progress(&format!(
                "solving: {:.1}s, {:.0}% of expected hashes, {}",
                secs,
                100.0 * done / expected,
                rate(done / secs.max(1e-9))
            ));
            if timeout.is_some_and(|t| started.elapsed() >= t) {
                control.cancel();
            }
        }
    })?;
    out.progress_done();
    let Some(work) = found else {
        bail!(
            "no work found within the --timeout of {:.1}s",
            elapsed.as_secs_f64()
        );
    };
    let value = work_value(&a.hash, work);
    let base = profile.threshold(BlockKind::Send);
    let hashes = control.hashes();
    let hps = hashes as f64 / elapsed.as_secs_f64().max(1e-9);
    let human = format!(
        "work        {work}\n\
         difficulty  {value}  (the work's value)\n\
         multiplier  {}  (value over the {} send threshold {base})\n\
         threshold   {threshold}\n\
         hash        {}\n\
         time        {:.1} ms, {} hashes, {} on {}",
        value.to_multiplier(base),
        profile.name,
        a.hash,
        elapsed.as_secs_f64() * 1e3,
        hashes,
        rate(hps),
        solver.name(),
    );
    let json = json!({
        "hash": a.hash.to_string(),
        "work": work.to_string(),
        "difficulty": value.to_string(),
        "multiplier": value.to_multiplier(base).to_string(),
        "threshold": threshold.to_string(),
        "profile": profile.name,
        "elapsed_ms": elapsed.as_secs_f64() * 1e3,
        "hashes": hashes,
        "solver": solver.name(),
    });
    out.emit(&human, &json)?;
    Ok(ExitCode::SUCCESS)
}

fn validate(a: ValidateArgs, out: Output) -> anyhow::Result<ExitCode> {
    let (threshold, profile) = a.target.resolve()?;
    let value = work_value(&a.hash, a.work);
    let base = profile.threshold(BlockKind::Send);
    let valid = value >= threshold;
    let valid_all = value >= profile.thresholds.iter().copied().max().unwrap_or(base);
    let valid_receive = value >= profile.threshold(BlockKind::Receive);
    let human = format!(
        "{}\n\
         difficulty     {value}  (the work's value)\n\
         threshold      {threshold}\n\
         multiplier     {}  (over the {} send threshold {base})\n\
         valid_all      {valid_all}  (meets every block kind's threshold)\n\
         valid_receive  {valid_receive}",
        if valid { "valid" } else { "NOT valid" },
        value.to_multiplier(base),
        profile.name,
    );
    let json = json!({
        "hash": a.hash.to_string(),
        "work": a.work.to_string(),
        "valid": valid,
        "valid_all": if valid_all { "1" } else { "0" },
        "valid_receive": if valid_receive { "1" } else { "0" },
        "difficulty": value.to_string(),
        "multiplier": value.to_multiplier(base).to_string(),
        "threshold": threshold.to_string(),
        "profile": profile.name,
    });
    out.emit(&human, &json)?;
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    })
}
