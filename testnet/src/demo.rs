//! The program behind `testnet/run.sh`: a whole network as `dpow` processes, on loopback or
//! (with `--netns`) on hosts in network namespaces, work put through it, and a summary.
#![allow(clippy::print_stdout)] // the console program behind run.sh: printing is its job

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::procs::{Dpow, Place, Procs, dpow_json, field, start_node_at, wait_until};

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
    /// Put every node on a host of its own in a network namespace (needs root, iproute2 and
    /// nftables): bootstrap, service and a relay on a public segment, the workers split
    /// across two homes behind NAT routers. The namespaces are removed on exit, on errors and
    /// on Ctrl-C.
    #[arg(long)]
    pub netns: bool,
}

fn u64_of(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

/// Per node: its host, what it knows of its reachability, its Kademlia mode, and its
/// connections that are direct, relayed and hole-punched (`?`/0 where the node does not say).
fn connections(topo: &crate::netns::Topology, procs: &Procs) {
    println!(
        "\n{:<10} {:<14} {:<13} {:<7} {:>6} {:>8} {:>12}",
        "node", "address", "reachability", "kad", "direct", "relayed", "hole-punched"
    );
    let (mut direct, mut relayed) = (0, 0);
    for p in &procs.0 {
        let ip = topo.host(p.name()).map_or("?".into(), |h| h.ip.to_string());
        let s = p.stats().unwrap_or_default();
        let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        direct += u64_of(&s, "connections_direct");
        relayed += u64_of(&s, "connections_relayed");
        println!(
            "{:<10} {:<14} {:<13} {:<7} {:>6} {:>8} {:>12}",
            p.name(),
            ip,
            text("reachability"),
            text("kad_mode"),
            u64_of(&s, "connections_direct"),
            u64_of(&s, "connections_relayed"),
            u64_of(&s, "hole_punches"),
        );
    }
    let all = direct + relayed;
    if all > 0 {
        println!(
            "connections {all}: {:.0}% direct, {:.0}% relayed",
            100.0 * direct as f64 / all as f64,
            100.0 * relayed as f64 / all as f64
        );
    }
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
    let topo = if a.netns {
        crate::netns::available().map_err(|e| anyhow::anyhow!("--netns cannot run here: {e}"))?;
        crate::netns::tear_down_on_signal()?;
        let t = crate::netns::Topology::new(crate::netns::Layout {
            public_workers: 0,
            home_workers: a.workers,
        })?;
        Some(t)
    } else {
        None
    };
    let quic = topo.is_some() && crate::netns::supports_quic(&dpow);
    let host_flags = if topo.is_some() {
        crate::netns::node_flags(&dpow)
    } else {
        Vec::new()
    };
    // Where each node runs: its own host in the topology, or loopback.
    let place = |host: &str| -> anyhow::Result<Place> {
        Ok(match &topo {
            Some(t) => {
                let h = t.host(host)?;
                Place {
                    netns: Some(h.ns.clone()),
                    listen: h.listen(quic),
                    http: crate::netns::HTTP.into(),
                }
            }
            None => Place::loopback(),
        })
    };
    // The command line runs beside the service node (in its namespace, when there is one).
    let cli = Dpow {
        bin: dpow.clone(),
        netns: place("service")?.netns,
    };
    let dir = tempfile::Builder::new()
        .prefix("dpow-testnet.")
        .tempdir()
        .context("creating the data directory")?;
    let d = dir.path();
    println!("data under {}", d.display());
    if let Some(t) = &topo {
        println!("{}", t.describe());
    }

    let registrar = dpow_json(
        &cli,
        &[
            "keys",
            "new",
            "--out",
            &d.join("registrar.key").to_string_lossy(),
        ],
    )?;
    let service = dpow_json(
        &cli,
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
    let start = |name: &str, role: &str, genesis: &std::path::Path, extra: &[String]| {
        let mut args = host_flags.clone();
        args.extend_from_slice(extra);
        start_node_at(&dpow, d, name, role, genesis, &place(name)?, &args)
    };
    let boot = start("bootstrap", "registrar/bootstrap", &genesis0, &[])?;
    let genesis = d.join("genesis.toml");
    std::fs::write(&genesis, genesis_text(&format!("\"{}\"", boot.listen)))?;
    procs.0.push(boot);

    let service_node = start(
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
    procs.0.push(service_node);
    if topo.is_some() {
        procs.0.push(start("relay", "relay", &genesis, &[])?);
    }
    let mut accounts = Vec::new();
    for i in 0..a.workers {
        let account = crate::payouts::worker_account(i as u32)?;
        accounts.push(account);
        let w = start(
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
    crate::procs::register_service(&cli, &g, &rk, &service_acct, "testnet service")?;
    println!("\nregistered service {service_acct}");

    // Every node holds the registry and every worker knows every other before requests flow.
    wait_until(
        "the registry and worker announcements to spread",
        Duration::from_secs(30),
        || {
            procs.0.iter().all(|p| {
                p.stats().is_ok_and(|s| {
                    u64_of(&s, "registry_entries") >= 2
                        && (p.role != "worker" || u64_of(&s, "live_workers") >= a.workers as u64)
                })
            })
        },
    )?;

    if topo.is_some() {
        // AutoNAT's verdicts: until a node has one it dials no one and serves no DHT.
        let t0 = Instant::now();
        wait_until(
            "every node to learn its reachability",
            Duration::from_secs(90),
            || {
                procs
                    .0
                    .iter()
                    .all(|p| p.stats().is_ok_and(|s| crate::hostnet::settled(&s)))
            },
        )?;
        println!(
            "every node knows its reachability after {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }

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
        &cli,
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
    let receipts = &result["receipts"];
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
    println!(
        "receipts   {} signed by the service, {} held by its peers before the client left",
        receipts["signed"], receipts["held_by_peers"]
    );

    if let Some(t) = &topo {
        connections(t, &procs);
    }

    let (mut hashes, mut won) = (0u64, 0u64);
    println!(
        "\n{:<10} {:<66} {:>6} {:>14}",
        "worker", "account", "wins", "hashes"
    );
    let wins = &result["wins"];
    let (mut gossiped, mut solved) = (0, 0);
    for (i, p) in procs.0.iter().filter(|p| p.role == "worker").enumerate() {
        let s = p.stats()?;
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
                p.stats()
                    .is_ok_and(|s| u64_of(&s, "ledger_receipts") >= answered)
            })
        },
    )?;
    // One snapshot of every node; taken again if an epoch ended while it was taken (the
    // digest is the current epoch's, so nodes read on either side of the boundary differ).
    for _ in 0..3 {
        digests.clear();
        earned.clear();
        let mut epochs = std::collections::BTreeSet::new();
        for p in &procs.0 {
            let s = p.stats()?;
            digests.insert(s["ledger_digest"].as_str().unwrap_or("").to_string());
            epoch = u64_of(&s, "ledger_epoch");
            epochs.insert(epoch);
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
        if epochs.len() == 1 {
            break;
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
    // Anyone can recompute the books: `dpow ledger` through another node (the last worker;
    // on namespaces the relay, which the command beside the service can reach)
    // fetches the receipts, verifies each, and must reach the same digest.
    let other = procs
        .0
        .iter()
        .rev()
        .find(|p| topo.is_none() || p.role == "relay")
        .map(|p| p.listen.clone())
        .unwrap_or_default();
    let verify = dpow_json(
        &cli,
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
        &cli,
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
    crate::payouts::summary(&cli, d, &g, &other, &registrar_acct, &epochs, &accounts)?;

    // The service node's work-server API, as a wallet would use it.
    let service_node = procs.0.get(1).context("the service node")?;
    let api = format!("{}/", service_node.http);
    println!("\n== the service node's work API at {api}");
    let root = "7F7122E843B27524F4F1D6BD14AEFD1C8F01D36AE8653D37417533C0D4BC2BE6";
    let v =
        service_node.post_json(&serde_json::json!({"action": "work_generate", "hash": root}))?;
    let work = field(&v, "work")?;
    println!(
        "work_generate   work {work}  difficulty {}  source {}  {:.1} ms",
        field(&v, "difficulty")?,
        field(&v, "source")?,
        v["elapsed_ms"].as_f64().unwrap_or(0.0)
    );
    let val = service_node
        .post_json(&serde_json::json!({"action": "work_validate", "hash": root, "work": work}))?;
    println!(
        "work_validate   valid_all {}  valid_receive {}",
        field(&val, "valid_all")?,
        field(&val, "valid_receive")?
    );
    let next = "A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F90";
    service_node.post_json(&serde_json::json!({"action": "work_precache", "hash": next}))?;
    let mut hit = Value::Null;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        let v = service_node
            .post_json(&serde_json::json!({"action": "work_generate", "hash": next}))?;
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
        let inside = cli
            .netns
            .as_ref()
            .map_or(String::new(), |ns| format!("ip netns exec {ns} "));
        println!(
            "work API: {inside}curl -s -d '{{\"action\":\"work_generate\",\"hash\":\"{root}\"}}' {api}"
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
