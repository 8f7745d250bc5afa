//! A worker's own statistics: what it sent, won, lost and had rejected, its devices and its
//! credits per epoch, as the event loop counts them, as `dpow status` prints them from a
//! running node process, and as the dashboard's "This worker" panel shows them.
//!
//! The in-process worker solves with a CPU solver wrapped to lie on every other answer: the
//! node must catch each lie itself, before it publishes anything.
#![allow(clippy::print_stderr)] // says why the browser half was skipped

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dpow_keys::{NanoAccount, PublicKey, SecretKey};
use dpow_node::net::{self, NodeHandle, NodeStats, OwnReject, SubmitError, WorkAsk, WorkerConfig};
use dpow_protocol::ledger::{Ledger, epoch_of};
use dpow_protocol::{BlockKind, Credits, Difficulty, Priority, RegistryAction, Root, Work};
use dpow_solver::{Control, CpuSolver, SolveError, Solver};
use dpow_testnet::local::{LocalNet, LocalOptions, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// A CPU solver that returns a nonce failing the threshold instead of every other answer
/// it finds (the first, third, …), and counts how often it lied.
struct Liar {
    inner: CpuSolver,
    answers: AtomicU64,
    lies: Arc<AtomicU64>,
}

impl Solver for Liar {
    fn name(&self) -> String {
        format!("liar over {}", self.inner.name())
    }

    fn solve(
        &self,
        root: &Root,
        difficulty: Difficulty,
        control: &Control,
    ) -> Result<Option<Work>, SolveError> {
        let Some(work) = self.inner.solve(root, difficulty, control)? else {
            return Ok(None);
        };
        if self.answers.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
            return Ok(Some(work));
        }
        self.lies.fetch_add(1, Ordering::SeqCst);
        // The next nonce that misses the threshold: invalid for certain, not just likely.
        let mut bad = work.0.wrapping_add(1);
        while dpow_protocol::is_valid(root, Work(bad), difficulty) {
            bad = bad.wrapping_add(1);
        }
        Ok(Some(Work(bad)))
    }
}

fn ask(i: u32, lifetime: Duration) -> WorkAsk {
    let mut r = [0x5cu8; 32];
    r[..4].copy_from_slice(&i.to_be_bytes());
    WorkAsk {
        root: Root(r),
        difficulty: dpow_protocol::Profile::test().threshold(BlockKind::Receive),
        kind: Some(BlockKind::Receive),
        account: None,
        priority: Priority::Normal,
        lifetime,
    }
}

/// A network with no worker but one that lies every other time, paid to another account,
/// and a service node; `n` requests sent at once, each answered or expired.
struct Lying {
    net: LocalNet,
    service: NodeHandle,
    worker: PublicKey,
    payout: NanoAccount,
    lies: u64,
    answered: u64,
}

/// A bootstrap node and nothing else yet: the caller adds its own worker, then calls
/// [`register`].
async fn bare_network() -> LocalNet {
    LocalNet::start(LocalOptions {
        workers: 0,
        register_service: false,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts")
}

/// Register and fund the service once the bootstrap hears a worker on the request topic.
async fn register(net: &LocalNet) {
    net.bootstrap
        .wait_for_peers(1, T)
        .await
        .expect("the worker subscribes");
    for action in [
        RegistryAction::RegisterService {
            service: net.service.public(),
            name: "stats test service".into(),
        },
        RegistryAction::GrantCredits {
            service: net.service.public(),
            credits: Credits(1_000_000),
        },
    ] {
        net.bootstrap
            .registry(action, net.registrar.clone())
            .await
            .expect("registry entry");
    }
}

async fn lying_worker_network(n: u32) -> Lying {
    let mut net = bare_network().await;
    let key = SecretKey::generate().expect("key");
    let worker = key.public();
    let payout = NanoAccount::from_bytes(SecretKey::generate().expect("payout key").public().0)
        .expect("not the burn account");
    let lies = Arc::new(AtomicU64::new(0));
    let mut cfg = net.config(key);
    cfg.worker = Some(WorkerConfig {
        solver: Box::new(Liar {
            inner: CpuSolver::new(1).expect("cpu solver"),
            answers: AtomicU64::new(0),
            lies: lies.clone(),
        }),
        payout: Some(payout),
        rate: Some(20_000_000),
    });
    let node = net::spawn(cfg).await.expect("worker starts");
    node.wait_synced(T).await.expect("worker syncs");
    net.workers.push(node);
    register(&net).await;
    net.wait_all(T, |s| s.registry_entries >= 2)
        .await
        .expect("the worker knows the service");
    let service = net.service_node().await.expect("service node");
    wait_for(&service, T, |s| s.live_workers >= 1)
        .await
        .expect("the service hears of the worker");

    // A request whose answer was a lie is given up by its only worker: it expires.
    let lifetime = Duration::from_secs(4);
    let answers = futures::future::join_all((0..n).map(|i| service.submit(ask(i, lifetime)))).await;
    let mut answered = 0;
    for a in answers {
        match a {
            Ok(a) => {
                assert_eq!(a.worker, worker, "the only worker answered");
                answered += 1;
            }
            Err(SubmitError::Expired) => {}
            Err(e) => panic!("unexpected outcome: {e}"),
        }
    }
    Lying {
        net,
        service,
        worker,
        payout,
        lies: lies.load(Ordering::SeqCst),
        answered,
    }
}

/// The worker's statistics once its receipts are all counted.
async fn settled(l: &Lying) -> NodeStats {
    let want = l.answered;
    wait_for(&l.net.workers[0], T, |s| {
        s.worker
            .as_ref()
            .is_some_and(|w| w.won == want && w.credits > 0)
    })
    .await
    .expect("the worker's figures settle")
}

/// Every credits-per-epoch figure agrees with `ledger`, and they cover the last 7 epochs.
fn check_epochs(ledger: &Ledger, me: &PublicKey, by_epoch: &[(u64, u64)], total: u64) {
    assert_eq!(by_epoch.len(), 7, "{by_epoch:?}");
    let now = epoch_of(net::now_ms(), ledger.epoch_ms());
    assert!(now - by_epoch[0].0 <= 1, "the current epoch first");
    for (i, (epoch, credits)) in by_epoch.iter().enumerate() {
        assert_eq!(
            *epoch,
            by_epoch[0].0 - i as u64,
            "consecutive, newest first"
        );
        let want = ledger.earned_in_epoch(*epoch).get(me).copied().unwrap_or(0);
        assert_eq!(u128::from(*credits), want, "epoch {epoch}");
    }
    assert_eq!(
        by_epoch.iter().map(|(_, c)| c).sum::<u64>(),
        total,
        "every receipt is in the last 7 epochs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_that_lies_every_other_time_sends_only_valid_work_and_counts_the_rest() {
    let n = 6;
    let l = lying_worker_network(n).await;
    assert_eq!(l.lies, 3, "every other answer of 6 was a lie");
    assert_eq!(
        l.answered,
        u64::from(n) - l.lies,
        "every true answer was paid"
    );

    let s = settled(&l).await;
    let w = s.worker.clone().expect("a worker has worker figures");
    assert_eq!(w.sent, l.answered, "only true answers went out");
    assert_eq!(w.won, l.answered);
    assert_eq!((w.lost, w.awaiting_receipt), (0, 0));
    assert_eq!(w.rejected_for(OwnReject::InvalidWork), l.lies);
    assert_eq!(
        w.rejected_total(),
        l.lies,
        "no other reason: {:?}",
        w.rejected
    );
    assert_eq!(w.payout, l.payout.to_string());
    assert_eq!(w.devices.len(), 1, "{:?}", w.devices);
    assert!(w.devices[0].name.starts_with("liar over cpu"));
    assert!(w.devices[0].hash_rate > 0);

    // Credits as every ledger has them.
    let (ledger, _) = l.service.ledger().await.expect("ledger");
    assert_eq!(ledger.len() as u64, l.answered);
    assert!(
        ledger
            .counted()
            .all(|r| r.payload().result.payload().worker == l.worker)
    );
    assert_eq!(u128::from(w.credits), ledger.earned(&l.worker));
    assert_eq!(s.credits_earned, w.credits);
    let by_epoch: Vec<(u64, u64)> = w
        .credits_by_epoch
        .iter()
        .map(|e| (e.epoch, e.credits))
        .collect();
    check_epochs(&ledger, &l.worker, &by_epoch, w.credits);

    // The same figures for Prometheus.
    let text = dpow_node::http::metrics_text(&s);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text format");
    let metric = |name: &str, label: Option<(&str, &str)>| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|x| x.metric == name && label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                _ => f64::NAN,
            })
    };
    for (outcome, n) in [("sent", w.sent), ("won", w.won), ("lost", w.lost)] {
        assert_eq!(
            metric("dpow_worker_results_total", Some(("outcome", outcome))),
            Some(n as f64),
            "{outcome}"
        );
    }
    assert_eq!(
        metric(
            "dpow_worker_rejected_total",
            Some(("reason", "invalid_work"))
        ),
        Some(l.lies as f64)
    );
    assert_eq!(
        metric("dpow_worker_credits_total", None),
        Some(w.credits as f64)
    );
    assert_eq!(
        metric(
            "dpow_device_hash_rate",
            Some(("device", w.devices[0].name.as_str()))
        ),
        Some(w.devices[0].hash_rate as f64)
    );

    // No lie ever left the worker: nobody refused invalid work from it.
    for node in [&l.service, &l.net.bootstrap] {
        let st = node.stats();
        assert_eq!(st.rejected_for("invalid_work"), 0, "{:?}", st.rejected);
        assert_eq!(
            st.accepted_of("work-result"),
            l.answered,
            "{:?}",
            st.accepted
        );
        assert!(st.worker.is_none(), "not a worker, no worker figures");
    }
}

/// Run `dpow ARGS` (blocking: call from a blocking task).
fn dpow(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("DPOW_HTTP_TOKEN")
        .output()
        .expect("dpow runs")
}

async fn dpow_async(bin: &Path, args: &[&str]) -> Output {
    let bin = bin.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        dpow(&bin, &args)
    })
    .await
    .expect("join")
}

fn stats_of(http: &str) -> Option<Value> {
    dpow_testnet::procs::http_get_json(&format!("{http}/api/stats")).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dpow_status_shows_a_worker_process_as_the_ledger_counts_it() {
    let bin = dpow_testnet::procs::dpow_binary().expect("dpow");
    let net = bare_network().await;
    let dir = tempfile::tempdir().expect("dir");
    let genesis = dir.path().join("genesis.toml");
    net.write_genesis(&genesis, true).expect("genesis written");
    let (b, d, g) = (bin.clone(), dir.path().to_path_buf(), genesis.clone());
    let payout = NanoAccount::from_bytes(SecretKey::generate().expect("key").public().0)
        .expect("not the burn account")
        .to_string();
    let pay = payout.clone();
    let proc = tokio::task::spawn_blocking(move || {
        let extra: Vec<String> = [
            "--payout",
            &pay,
            "--role",
            "worker",
            "--threads",
            "1",
            "--announce-rate",
            "20000000",
            "--status-interval",
            "0.5",
        ]
        .map(String::from)
        .to_vec();
        dpow_testnet::procs::start_node(&b, &d, "worker", "worker", &g, &extra)
    })
    .await
    .expect("join")
    .expect("the worker process starts");
    register(&net).await;
    tokio::task::block_in_place(|| {
        dpow_testnet::procs::wait_on(
            &proc.http,
            "the worker process to learn the registry",
            T,
            || stats_of(&proc.http).is_some_and(|v| v["registry_entries"].as_u64() >= Some(2)),
        )
    })
    .expect("the worker process learns the registry");
    let service = net.service_node().await.expect("service node");
    wait_for(&service, T, |s| s.live_workers >= 1)
        .await
        .expect("the service hears of the worker");

    let n = 4u64;
    for i in 0..n {
        service
            .submit(ask(100 + i as u32, Duration::from_secs(30)))
            .await
            .expect("work");
    }
    tokio::task::block_in_place(|| {
        dpow_testnet::procs::wait_on(&proc.http, "the worker to count its wins", T, || {
            stats_of(&proc.http).is_some_and(|v| v["worker"]["won"].as_u64() == Some(n))
        })
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", stats_of(&proc.http)));
    let account = stats_of(&proc.http).expect("stats")["account"]
        .as_str()
        .expect("account")
        .to_string();
    let me: PublicKey = account.parse().expect("account");
    let (ledger, _) = service.ledger().await.expect("ledger");
    assert_eq!(ledger.len() as u64, n);

    // --json: the worker's figures, as the service's ledger has them.
    let out = dpow_async(&bin, &["--json", "status", "--http", &proc.http]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let w = &v["worker"];
    assert_eq!(v["account"], account.as_str());
    assert_eq!(w["payout"], payout.as_str(), "paid to the account it named");
    assert_eq!(w["sent"], n);
    assert_eq!(w["won"], n);
    assert_eq!(w["lost"], 0);
    assert_eq!(w["awaiting_receipt"], 0);
    assert_eq!(w["rejected"], serde_json::json!({}));
    let credits = w["credits"].as_u64().expect("credits");
    assert_eq!(u128::from(credits), ledger.earned(&me));
    let by_epoch: Vec<(u64, u64)> = w["credits_by_epoch"]
        .as_array()
        .expect("epochs")
        .iter()
        .map(|e| {
            (
                e["epoch"].as_u64().expect("epoch"),
                e["credits"].as_u64().expect("credits"),
            )
        })
        .collect();
    check_epochs(&ledger, &me, &by_epoch, credits);
    let devices = w["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "one CPU pool: {devices:?}");
    assert!(
        devices[0]["name"]
            .as_str()
            .expect("name")
            .starts_with("cpu")
    );
    assert!(devices[0]["hash_rate"].as_u64().expect("rate") > 0);

    // The table: one figure per line.
    let out = dpow_async(&bin, &["status", "--http", &proc.http]).await;
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    for line in [
        row("payout", &payout),
        row("sent", n),
        row("won", n),
        row("lost", 0),
        row("rejected", 0),
        row("credits", credits),
        row(
            &format!("  epoch {}", by_epoch[0].0),
            format!("{}  (current)", by_epoch[0].1),
        ),
    ] {
        assert!(
            table.lines().any(|l| l == line),
            "{line:?} missing from\n{table}"
        );
    }
    let device = table
        .lines()
        .find(|l| l.starts_with("device "))
        .expect("a device line");
    assert!(device.contains("H/s  cpu"), "{device}");
}

/// One line of `dpow status`'s table.
fn row(key: &str, value: impl std::fmt::Display) -> String {
    format!("{key:<18}{value}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dpow_status_says_when_a_node_does_not_work_or_does_not_answer() {
    let bin = dpow_testnet::procs::dpow_binary().expect("dpow");
    let net = LocalNet::start(LocalOptions {
        workers: 1,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let service = net.service_node().await.expect("service node");
    wait_for(&service, T, |s| s.live_workers == 1)
        .await
        .expect("the service hears of the worker");
    let addr =
        dpow_testnet::local::serve_http(dpow_node::http::router(service.stats_reader())).await;
    let url = format!("http://{addr}");

    // A node that does not work: its general figures, and exit status 1.
    let out = dpow_async(&bin, &["--json", "status", "--http", &url]).await;
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["worker"].is_null());
    assert_eq!(v["peer_id"], service.peer_id().to_string().as_str());
    assert_eq!(v["live_workers"], 1);
    let out = dpow_async(&bin, &["status", "--http", &addr.to_string()]).await;
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("does not work"), "{text}");
    assert!(
        text.lines().any(|l| l == row("workers online", 1)),
        "{text}"
    );

    // Nobody listening: a clear error, exit status 2.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = dpow_async(&bin, &["status", "--http", &format!("127.0.0.1:{port}")]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach a node at http://127.0.0.1:{port}"))
            && err.contains("is `dpow node` running with --http"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// The text of the element with `id` in a dumped DOM.
fn element(dom: &str, id: &str) -> String {
    dpow_testnet::browser::element(dom, id).unwrap_or_else(|| panic!("#{id} missing from the page"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_this_workers_panel() {
    let Some(browser) = dpow_testnet::browser::chromium().expect("a browser") else {
        eprintln!("skipped: no chromium (scripts/test.sh installs it)");
        return;
    };
    let l = lying_worker_network(2).await;
    let s = settled(&l).await;
    let w = s.worker.clone().expect("worker figures");
    let addr =
        dpow_testnet::local::serve_http(dpow_node::http::router(l.net.workers[0].stats_reader()))
            .await;
    let profile = tempfile::tempdir().expect("profile dir");
    let args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--timeout=4000".into(),
        format!("--user-data-dir={}", profile.path().display()),
        "--dump-dom".into(),
        format!("http://{addr}/"),
    ];
    let out = tokio::task::spawn_blocking(move || Command::new(browser).args(args).output())
        .await
        .expect("join")
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("<section id=\"own\">"), "the panel is shown");
    assert_eq!(element(&dom, "own_sent"), w.sent.to_string());
    assert_eq!(element(&dom, "own_won"), w.won.to_string());
    assert_eq!(element(&dom, "own_lost"), "0");
    assert_eq!(element(&dom, "own_rejected"), l.lies.to_string());
    assert_eq!(element(&dom, "own_credits"), w.credits.to_string());
    assert_eq!(element(&dom, "own_payout"), l.payout.to_string());
    assert!(
        dom.contains("<td>invalid_work</td>"),
        "the reason is listed"
    );
    assert!(dom.contains(&format!("<td>{}</td>", w.devices[0].name)));
    assert!(dom.contains(&format!(
        "<td>{} (current)</td>",
        w.credits_by_epoch[0].epoch
    )));
}
