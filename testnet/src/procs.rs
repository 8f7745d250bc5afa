//! The process-based testnet behind `testnet/run.sh`.
#![allow(clippy::print_stdout)] // the console program behind run.sh: printing is its job

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// Options of `dpow-testnet` (and so of `testnet/run.sh`).
#[derive(Debug, clap::Parser)]
#[command(
    name = "testnet/run.sh",
    about = "Start a dpow network on loopback and put work through it"
)]
pub struct Args {
    /// Worker nodes to start.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Requests to submit, spread over every block kind.
    #[arg(long, default_value_t = 50)]
    pub requests: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u32,
    /// Difficulty profile: test (default, the demo takes seconds), nano (real difficulty),
    /// banano, multiplier-proposal.
    #[arg(long, default_value = "test")]
    pub profile: String,
    /// CPU threads per worker (default: 1).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Leave the network running after the summary, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// The dpow binary (default: next to this program).
    #[arg(long)]
    pub dpow: Option<PathBuf>,
}

/// A started node process.
pub struct NodeProc {
    /// What it does in the testnet (for the summary).
    pub role: String,
    /// The process.
    pub child: Child,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Its first listen address (with `/p2p/`).
    pub listen: String,
    /// Its HTTP base URL.
    pub http: String,
}

impl Drop for NodeProc {
    /// A node process never outlives its handle: killed and reaped (a no-op if already so).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `dpow` binary beside the running test or program (`target/debug/dpow` for the test
/// suite), built with the suite's own selection when it is missing, so that RocksDB is not
/// compiled again for another feature set.
pub fn dpow_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("the running binary's path")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the target directory")?;
    let bin = dir.join("dpow");
    if !bin.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "--workspace", "--all-features", "--bins"])
            .status()
            .context("running cargo")?;
        if !ok.success() {
            bail!("building dpow failed");
        }
    }
    Ok(bin)
}

/// Every child process, stopped when dropped (also on errors and panics).
#[derive(Default)]
struct Procs(Vec<NodeProc>);

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.child.kill();
        }
        for p in &mut self.0 {
            let _ = p.child.wait();
        }
    }
}

fn dpow_cmd(dpow: &Path) -> Command {
    let mut c = Command::new(dpow);
    c.env("DPOW_LOG", "info");
    c
}

/// Run `dpow --json ARGS` to completion and parse its output.
/// Run `dpow ARGS` and return its standard output as text, or its standard error as the error.
pub(crate) fn dpow_text(dpow: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = dpow_cmd(dpow)
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running dpow {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "dpow {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("output of dpow {}", args[0]))
}

/// Run `dpow --json ARGS` and parse its output.
pub(crate) fn dpow_json(dpow: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let out = dpow_cmd(dpow)
        .arg("--json")
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running dpow {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "dpow {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("output of dpow {}", args[0]))
}

fn field(v: &Value, k: &str) -> anyhow::Result<String> {
    v[k].as_str()
        .map(str::to_string)
        .with_context(|| format!("missing {k} in {v}"))
}

/// Start `dpow --json node ...` (data in `dir/name`, log in `dir/name.log`) and wait for its
/// start-up report on stdout.
pub fn start_node(
    dpow: &Path,
    dir: &Path,
    name: &str,
    role: &str,
    genesis: &Path,
    extra: &[String],
) -> anyhow::Result<NodeProc> {
    let log = dir.join(format!("{name}.log"));
    let mut cmd = dpow_cmd(dpow);
    cmd.arg("--json")
        .arg("node")
        .arg("--genesis")
        .arg(genesis)
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--http", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).context("creating a log file")?);
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("node stdout")?;
    let mut text = String::new();
    let mut reader = BufReader::new(stdout);
    // The report is one pretty-printed JSON object: read until it parses.
    let started = Instant::now();
    let report: Value = loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).context("reading node output")?;
        if n == 0 {
            let _ = child.kill();
            let _ = child.wait();
            let mut logtext = String::new();
            let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut logtext));
            bail!("{name} exited during start-up:\n{logtext}");
        }
        text.push_str(&line);
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            break v;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{name} did not report within a minute");
        }
    };
    // Keep draining stdout so the node never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    let listen = report["listen"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .context("node reported no listen address")?
        .to_string();
    Ok(NodeProc {
        role: role.to_string(),
        child,
        peer_id: field(&report, "peer_id")?,
        listen,
        http: field(&report, "http")?,
    })
}

/// `GET url` over plain HTTP/1.0, parsed as JSON.
pub fn http_get_json(url: &str) -> anyhow::Result<Value> {
    let rest = url.strip_prefix("http://").context("http:// URL")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let json = body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .context("malformed HTTP response")?;
    serde_json::from_str(json).context("parsing /api/stats")
}

/// `POST url` with a JSON body over plain HTTP/1.0, parsed as JSON.
pub fn http_post_json(url: &str, body: &Value) -> anyhow::Result<Value> {
    let rest = url.strip_prefix("http://").context("http:// URL")?;
    let host = rest.split('/').next().unwrap_or(rest);
    let body = body.to_string();
    let mut s = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "POST / HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let json = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .context("malformed HTTP response")?;
    serde_json::from_str(json).context("parsing the API's answer")
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while !ok() {
        if t0.elapsed() > timeout {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn u64_of(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

/// Run the testnet.
pub fn run(a: Args) -> anyhow::Result<()> {
    if a.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let dpow = match &a.dpow {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("program directory")?
            .join("dpow"),
    };
    if !dpow.exists() {
        bail!(
            "{} not found: build it with `cargo build -p dpow-node`",
            dpow.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("dpow-testnet.")
        .tempdir()
        .context("creating the data directory")?;
    let d = dir.path();
    println!("data under {}", d.display());

    let registrar = dpow_json(
        &dpow,
        &[
            "keys",
            "new",
            "--out",
            &d.join("registrar.key").to_string_lossy(),
        ],
    )?;
    let service = dpow_json(
        &dpow,
        &[
            "keys",
            "new",
            "--out",
            &d.join("service.key").to_string_lossy(),
        ],
    )?;
    let registrar_acct = field(&registrar, "key")?;
    let service_acct = field(&service, "key")?;

    let genesis0 = d.join("genesis-bootstrap.toml");
    let genesis_text = |bootstrap: &str| {
        format!(
            "network = \"dpow-testnet\"\nprofile = \"{}\"\nregistrars = [\"{registrar_acct}\"]\nbootstrap = [{bootstrap}]\n{}",
            a.profile,
            crate::payouts::GENESIS_TIMES
        )
    };
    std::fs::write(&genesis0, genesis_text(""))?;

    let mut procs = Procs::default();
    let boot = start_node(&dpow, d, "bootstrap", "registrar/bootstrap", &genesis0, &[])?;
    let genesis = d.join("genesis.toml");
    std::fs::write(&genesis, genesis_text(&format!("\"{}\"", boot.listen)))?;
    procs.0.push(boot);

    let service_node = start_node(
        &dpow,
        d,
        "service",
        "service",
        &genesis,
        &[
            "--role".into(),
            "service".into(),
            "--service-key".into(),
            d.join("service.key").to_string_lossy().into_owned(),
        ],
    )?;
    let service_addr = service_node.listen.clone();
    let service_http = service_node.http.clone();
    procs.0.push(service_node);
    let mut accounts = Vec::new();
    for i in 0..a.workers {
        let account = crate::payouts::worker_account(i as u32)?;
        accounts.push(account);
        let w = start_node(
            &dpow,
            d,
            &format!("worker{}", i + 1),
            "worker",
            &genesis,
            &[
                "--role".into(),
                "worker".into(),
                "--threads".into(),
                a.threads.to_string(),
                "--status-interval".into(),
                "1".into(),
                "--payout".into(),
                account.to_string(),
            ],
        )?;
        procs.0.push(w);
    }

    println!("\n{:<20} {:<54} http", "role", "peer id");
    for p in &procs.0 {
        println!("{:<20} {:<54} {}", p.role, p.peer_id, p.http);
    }

    let g = genesis.to_string_lossy().into_owned();
    let rk = d.join("registrar.key").to_string_lossy().into_owned();
    dpow_json(
        &dpow,
        &[
            "registry",
            "--genesis",
            &g,
            "register-service",
            "--key",
            &rk,
            "--service",
            &service_acct,
            "--name",
            "testnet service",
        ],
    )?;
    dpow_json(
        &dpow,
        &[
            "registry",
            "--genesis",
            &g,
            "grant",
            "--key",
            &rk,
            "--service",
            &service_acct,
            "--credits",
            "1000000",
        ],
    )?;
    println!("\nregistered service {service_acct}");

    // Every node holds the registry and every worker knows every other before requests flow.
    let urls: Vec<(String, String)> = procs
        .0
        .iter()
        .map(|p| (p.role.clone(), p.http.clone()))
        .collect();
    wait_until(
        "the registry and worker announcements to spread",
        Duration::from_secs(30),
        || {
            urls.iter().all(|(role, u)| {
                http_get_json(&format!("{u}/api/stats")).is_ok_and(|s| {
                    u64_of(&s, "registry_entries") >= 2
                        && (role != "worker" || u64_of(&s, "live_workers") >= a.workers as u64)
                })
            })
        },
    )?;

    let kinds = "send,receive,open,change,epoch";
    println!(
        "submitting {} requests ({kinds}, profile {}) through the service node, {} at a time",
        a.requests, a.profile, a.concurrency
    );
    let count = a.requests.to_string();
    let conc = a.concurrency.to_string();
    let sk = d.join("service.key").to_string_lossy().into_owned();
    let run_started = crate::local_now_ms();
    let result = dpow_json(
        &dpow,
        &[
            "request",
            "--genesis",
            &g,
            "--dial",
            &service_addr,
            "--key",
            &sk,
            "--kind",
            kinds,
            "--count",
            &count,
            "--concurrency",
            &conc,
            "--timeout",
            crate::payouts::REQUEST_LIFETIME_S,
        ],
    )?;
    let run_ended = crate::local_now_ms();
    let answered = u64_of(&result, "answered");
    let lat = &result["latency_ms"];
    println!("\n== summary");
    println!(
        "answered   {answered} of {} (every work re-checked with the blake2 crate by the client)",
        a.requests
    );
    println!(
        "latency    p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        lat["p50"].as_f64().unwrap_or(0.0),
        lat["p95"].as_f64().unwrap_or(0.0),
        lat["p99"].as_f64().unwrap_or(0.0),
        lat["max"].as_f64().unwrap_or(0.0)
    );
    println!(
        "throughput {:.1} works/s",
        result["works_per_second"].as_f64().unwrap_or(0.0)
    );

    let (mut hashes, mut won) = (0u64, 0u64);
    println!(
        "\n{:<10} {:<66} {:>6} {:>14}",
        "worker", "account", "wins", "hashes"
    );
    let wins = &result["wins"];
    let (mut gossiped, mut solved) = (0, 0);
    for (i, p) in procs.0.iter().filter(|p| p.role == "worker").enumerate() {
        let s = http_get_json(&format!("{}/api/stats", p.http))?;
        gossiped += u64_of(&s, "results_gossiped");
        solved += u64_of(&s, "solved");
        hashes += u64_of(&s, "hashes");
        won += u64_of(&s, "hashes_won");
        let account = s["account"].as_str().unwrap_or("").to_string();
        let w = wins[&account].as_u64().unwrap_or(0);
        println!(
            "{:<10} {:<66} {:>6} {:>14}",
            format!("worker{}", i + 1),
            account,
            w,
            u64_of(&s, "hashes")
        );
    }
    println!(
        "results    {} of {solved} sent by workers straight to the requesting node, {gossiped} by gossip (before a worker had found that node)",
        solved - gossiped.min(solved)
    );
    let lost = hashes - won.min(hashes);
    let share = if hashes > 0 {
        100.0 * lost as f64 / hashes as f64
    } else {
        0.0
    };
    println!(
        "hashes     {hashes} computed; {lost} ({share:.1}%) on requests another worker answered first\n           \
         (an upper bound on waste: search is memoryless, so only hashing after the first answer is lost)"
    );
    // The books: every node holds the same receipts; credits and a payout preview from them.
    let mut digests = std::collections::BTreeSet::new();
    let mut earned = std::collections::BTreeMap::new();
    let mut epoch = 0;
    wait_until(
        "receipts to reach every node",
        Duration::from_secs(10),
        || {
            procs.0.iter().all(|p| {
                http_get_json(&format!("{}/api/stats", p.http))
                    .is_ok_and(|s| u64_of(&s, "ledger_receipts") >= answered)
            })
        },
    )?;
    for p in &procs.0 {
        let s = http_get_json(&format!("{}/api/stats", p.http))?;
        digests.insert(s["ledger_digest"].as_str().unwrap_or("").to_string());
        epoch = u64_of(&s, "ledger_epoch");
        if p.role == "worker"
            && let Ok(account) = s["worker"]["payout"]
                .as_str()
                .unwrap_or_default()
                .parse::<dpow_keys::NanoAccount>()
        {
            let credits = u128::from(u64_of(&s, "credits_earned"));
            if credits > 0 {
                *earned.entry(account).or_default() += credits;
            }
        }
    }
    println!(
        "\n== ledger: {answered} receipts on every node, {} (epoch {epoch} digest {})",
        if digests.len() == 1 {
            "identical"
        } else {
            "DIFFERENT"
        },
        digests.iter().next().map_or("-", |d| &d[..16])
    );
    if !earned.is_empty() {
        let pool = dpow_protocol::ledger::RAW_PER_NANO;
        let report = dpow_protocol::ledger::PayoutReport::new(epoch, &earned, pool)?;
        println!(
            "payout preview of a 1 Nano pool for epoch {epoch}:\n{}",
            report.to_table()
        );
    }
    if digests.len() != 1 {
        bail!("the nodes' ledgers differ; logs are in {}", d.display());
    }
    // Anyone can recompute the books: `dpow ledger` through another node (the last worker)
    // fetches the receipts, verifies each, and must reach the same digest.
    let other = procs.0.last().map(|p| p.listen.clone()).unwrap_or_default();
    let verify = dpow_json(
        &dpow,
        &[
            "ledger",
            "--genesis",
            &g,
            "--dial",
            &other,
            "verify",
            "--epoch",
            &epoch.to_string(),
        ],
    )?;
    let theirs = verify["epochs"][0]["digest"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let agrees = digests.contains(&theirs);
    println!(
        "dpow ledger verify via {}: {} receipts, digest {} ({})",
        &other[other.len().saturating_sub(12)..],
        u64_of(&verify, "receipts"),
        &theirs[..theirs.len().min(16)],
        if agrees { "the same" } else { "DIFFERENT" }
    );
    if !agrees {
        bail!("dpow ledger verify disagrees with the nodes");
    }
    let bal = dpow_json(
        &dpow,
        &["ledger", "--genesis", &g, "--dial", &other, "balances"],
    )?;
    println!("balances recomputed by `dpow ledger balances` from the same receipts:");
    for x in bal["services"].as_array().into_iter().flatten() {
        println!(
            "  service {}  granted {}  spent {}  left {}",
            x["service"].as_str().unwrap_or("?"),
            x["granted"].as_str().unwrap_or("?"),
            x["spent"].as_str().unwrap_or("?"),
            x["balance"].as_str().unwrap_or("?")
        );
    }
    for x in bal["workers"].as_array().into_iter().flatten() {
        println!(
            "  worker  {}  earned {} credits in {} receipts",
            x["worker"].as_str().unwrap_or("?"),
            x["earned"].as_str().unwrap_or("?"),
            x["receipts"]
        );
    }

    let epochs: std::collections::BTreeSet<u64> =
        (run_started / 10_000..=run_ended / 10_000).collect();
    crate::payouts::summary(&dpow, d, &g, &other, &registrar_acct, &epochs, &accounts)?;

    // The service node's work-server API, as a wallet would use it.
    let api = format!("{service_http}/");
    println!("\n== the service node's work API at {api}");
    let root = "7F7122E843B27524F4F1D6BD14AEFD1C8F01D36AE8653D37417533C0D4BC2BE6";
    let v = http_post_json(
        &api,
        &serde_json::json!({"action": "work_generate", "hash": root}),
    )?;
    let work = field(&v, "work")?;
    println!(
        "work_generate   work {work}  difficulty {}  source {}  {:.1} ms",
        field(&v, "difficulty")?,
        field(&v, "source")?,
        v["elapsed_ms"].as_f64().unwrap_or(0.0)
    );
    let val = http_post_json(
        &api,
        &serde_json::json!({"action": "work_validate", "hash": root, "work": work}),
    )?;
    println!(
        "work_validate   valid_all {}  valid_receive {}",
        field(&val, "valid_all")?,
        field(&val, "valid_receive")?
    );
    let next = "A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F90";
    http_post_json(
        &api,
        &serde_json::json!({"action": "work_precache", "hash": next}),
    )?;
    let mut hit = Value::Null;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        let v = http_post_json(
            &api,
            &serde_json::json!({"action": "work_generate", "hash": next}),
        )?;
        if v["source"] == "cache" {
            hit = v;
            break;
        }
    }
    if hit.is_null() {
        bail!("precached work never came back from the cache");
    }
    println!(
        "work_precache   then work_generate from the cache in {:.2} ms",
        hit["elapsed_ms"].as_f64().unwrap_or(0.0)
    );

    let failed = result["failed"].as_array().map_or(0, Vec::len);
    if failed > 0 || answered != u64::from(a.requests) {
        bail!("{failed} requests failed; logs are in {}", d.display());
    }

    if a.keep {
        println!(
            "\nthe network keeps running; logs in {}. Ctrl-C to stop.",
            d.display()
        );
        println!("service node: {service_addr}");
        println!(
            "work API: curl -s -d '{{\"action\":\"work_generate\",\"hash\":\"{root}\"}}' {api}"
        );
        wait_for_ctrl_c();
    }
    Ok(())
}

fn wait_for_ctrl_c() {
    let (tx, rx) = std::sync::mpsc::channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    if let Ok(rt) = rt {
        std::thread::spawn(move || {
            rt.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
            let _ = tx.send(());
        });
        let _ = rx.recv();
    }
}
