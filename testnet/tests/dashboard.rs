//! The node's dashboard, statistics, history and metrics, on a small network.
//!
//! The browser test runs Debian's Chromium headless; `scripts/test.sh` installs it and sets
//! DPOW_REQUIRE_CHROMIUM=1, so in CI a missing browser fails the test instead of skipping it.
#![allow(clippy::print_stderr)] // says why the browser half was skipped

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dpow_node::net::{NodeHandle, WorkAsk};
use dpow_protocol::{BlockKind, Priority, Root};
use dpow_testnet::local::{LocalNet, LocalOptions, wait_for, wait_nodes};
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

/// The history's sampling interval here: short, so a test sees many samples in seconds.
const SAMPLE: Duration = Duration::from_millis(100);

/// Serve `node`'s statistics (history sampled every [`SAMPLE`]); the base URL.
async fn serve(node: &NodeHandle) -> String {
    let app = dpow_node::http::router_sampling_every(node.stats_reader(), SAMPLE);
    let addr = dpow_testnet::local::serve_http(app).await;
    format!("http://{addr}")
}

/// `GET /api/history` once `ok` holds for it (polled, within [`T`]).
async fn history_when(base: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let t0 = tokio::time::Instant::now();
    loop {
        let h: Value = get(&format!("{base}/api/history"))
            .await
            .json()
            .await
            .expect("json");
        if ok(&h) {
            return h;
        }
        assert!(t0.elapsed() < T, "history never got there: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn samples(h: &Value) -> &Vec<Value> {
    h["samples"].as_array().expect("samples")
}

async fn busy_network() -> (LocalNet, Arc<NodeHandle>, String) {
    let net = LocalNet::start(LocalOptions {
        workers: 3,
        ..LocalOptions::default()
    })
    .await
    .expect("network");
    let svc = Arc::new(net.service_node().await.expect("service"));
    for (i, kind) in BlockKind::ALL.into_iter().enumerate() {
        let mut r = [7u8; 32];
        r[0] = i as u8;
        svc.submit(WorkAsk {
            root: Root(r),
            difficulty: net.genesis.profile.threshold(kind),
            kind: Some(kind),
            account: None,
            priority: Priority::Normal,
            lifetime: Duration::from_secs(30),
        })
        .await
        .expect("answered");
    }
    // Let statistics settle: lists are rebuilt twice a second, in one pass with the receipt
    // count, so a count of 5 means the lists include every receipt's credits.
    wait_for(&svc, T, |s| {
        s.work_by_kind.values().sum::<u64>() >= 5 && s.live_workers == 3 && s.ledger_receipts >= 5
    })
    .await
    .expect("stats settle");
    let base = serve(&svc).await;
    // A few samples of the settled network, so that charts have lines to draw.
    history_when(&base, |h| samples(h).len() >= 3).await;
    (net, svc, base)
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.expect("the server answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_parse_and_agree_with_the_json_stats() {
    let (_net, _svc, base) = busy_network().await;
    let stats: Value = get(&format!("{base}/api/stats"))
        .await
        .json()
        .await
        .expect("json");
    let resp = get(&format!("{base}/metrics")).await;
    assert!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain"))
    );
    let text = resp.text().await.expect("text");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text format");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{name} {label:?} missing"));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name}: unexpected type"),
        }
    };
    assert_eq!(
        value("dpow_live_workers", None),
        stats["live_workers"].as_f64().expect("n")
    );
    assert_eq!(value("dpow_submitted_total", None), 5.0);
    assert_eq!(value("dpow_completed_total", None), 5.0);
    assert_eq!(
        value("dpow_services", None),
        stats["services"].as_f64().expect("n")
    );
    for kind in ["send", "receive", "open", "change", "epoch"] {
        assert_eq!(
            value("dpow_work_total", Some(("kind", kind))),
            1.0,
            "{kind}"
        );
    }
    let workers = stats["worker_list"].as_array().expect("workers");
    assert_eq!(workers.len(), 3, "{stats}");
    for w in workers {
        let acct = w["account"].as_str().expect("account");
        assert_eq!(
            value("dpow_worker_hash_rate", Some(("worker", acct))),
            w["hash_rate"].as_f64().expect("rate")
        );
    }
    assert!(value("dpow_request_latency_ms", Some(("quantile", "0.5"))) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_samples_the_busy_network() {
    let (net, _svc, base) = busy_network().await;
    let stats: Value = get(&format!("{base}/api/stats"))
        .await
        .json()
        .await
        .expect("json");
    let h = history_when(&base, |h| samples(h).len() >= 5).await;
    assert_eq!(h["interval_s"].as_f64(), Some(SAMPLE.as_secs_f64()));
    assert_eq!(
        h["capacity"].as_u64(),
        Some(dpow_node::net::history::HISTORY_CAPACITY as u64)
    );
    let s = samples(&h);
    assert!(s.len() <= dpow_node::net::history::HISTORY_CAPACITY);
    let times: Vec<u64> = s
        .iter()
        .map(|x| x["t_ms"].as_u64().expect("t_ms"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {times:?}"
    );
    // The network had settled before sampling began: every sample shows it busy.
    for x in s {
        assert_eq!(x["live_workers"], 3, "{x}");
        assert_eq!(x["network_hash_rate"], stats["network_hash_rate"], "{x}");
        assert!(x["connected_peers"].as_u64().expect("peers") >= 1, "{x}");
        assert!(x["requests_per_second"].as_f64().expect("rps") > 0.0, "{x}");
        let p50 = x["latency_p50_ms"].as_f64().expect("p50");
        assert!(
            p50 > 0.0 && x["latency_p99_ms"].as_f64().expect("p99") >= p50,
            "{x}"
        );
        assert_eq!(x["credits_earned"], 0, "a service node earns nothing: {x}");
        assert!(
            x["credits_moved"].is_u64() && x["ledger_receipts"].is_u64(),
            "{x}"
        );
    }
    // The ledger's receipts arrive: credits moved are what the service spent.
    let spent: u64 = net
        .workers
        .iter()
        .map(|w| w.stats().credits_earned)
        .sum::<u64>();
    let h = history_when(&base, |h| {
        samples(h)
            .last()
            .is_some_and(|x| x["credits_moved"].as_u64() >= Some(spent.max(1)))
    })
    .await;
    let last = samples(&h).last().expect("a sample");
    assert!(
        last["ledger_receipts"].as_u64().expect("receipts") >= 5,
        "{last}"
    );
    // One series per live worker, each at its announced rate, none longer than the samples.
    let workers = h["workers"].as_array().expect("workers");
    let mut got: Vec<&str> = workers
        .iter()
        .map(|w| w["account"].as_str().expect("account"))
        .collect();
    got.sort_unstable();
    let mut want: Vec<&str> = stats["worker_list"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["account"].as_str().expect("account"))
        .collect();
    want.sort_unstable();
    assert_eq!(got, want);
    for w in workers {
        let rates = w["hash_rates"].as_array().expect("rates");
        assert!(!rates.is_empty() && rates.len() <= samples(&h).len(), "{w}");
        assert!(rates.iter().all(|r| r == 20_000_000), "{w}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workers_history_shows_the_credits_it_earned() {
    let (net, _svc, _base) = busy_network().await;
    // Some worker won a request; its ledger credits it once the receipt is in.
    let workers: Vec<&NodeHandle> = net.workers.iter().collect();
    let worker = wait_nodes(&workers, T, || {
        workers
            .iter()
            .copied()
            .find(|w| w.stats_reader().check(|s| s.credits_earned > 0))
    })
    .await
    .expect("no worker was credited");
    let earned = worker.stats().credits_earned;
    let base = serve(worker).await;
    let h = history_when(&base, |h| {
        samples(h)
            .last()
            .is_some_and(|x| x["credits_earned"].as_u64() >= Some(earned))
    })
    .await;
    let last = samples(&h).last().expect("a sample");
    assert!(
        last["credits_moved"].as_u64().expect("moved") >= earned,
        "{last}"
    );
}

/// The page embeds the statistics and the history, so charts draw before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_carries_the_history() {
    let (_net, _svc, base) = busy_network().await;
    let html = get(&format!("{base}/")).await.text().await.expect("html");
    assert!(
        !html.contains("/*INITIAL_STATS*/"),
        "statistics not inlined"
    );
    assert!(!html.contains("/*INITIAL_HISTORY*/"), "history not inlined");
    let start = html.find("let past = ").expect("the history's variable") + 11;
    let end = start + html[start..].find(";\n").expect("statement end");
    let h: Value = serde_json::from_str(&html[start..end]).expect("inlined history is JSON");
    assert!(samples(&h).len() >= 3, "{h}");
    assert_eq!(h["workers"].as_array().map(Vec::len), Some(3));
}

/// The text of the element with `id` in a dumped DOM.
fn element(dom: &str, id: &str) -> String {
    dpow_testnet::browser::element(dom, id).unwrap_or_else(|| panic!("#{id} missing from the page"))
}

/// The markup inside the element with `id` (up to its first closing `</div>`: plots and
/// cells hold no divs).
fn inner<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} missing from the page"));
    let rest = &dom[start..];
    &rest[..rest.find("</div>").unwrap_or(rest.len())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_what_the_api_reports() {
    let Some(browser) = dpow_testnet::browser::chromium().expect("a browser") else {
        eprintln!("skipped: no chromium (scripts/test.sh installs it)");
        return;
    };
    let (net, svc, base) = busy_network().await;
    let profile = tempfile::tempdir().expect("profile dir");
    let profile_path = profile.path().to_path_buf();
    let page = format!("{base}/");
    let run = move |size: &str, extra: &[&str]| {
        let out = Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--timeout=4000",
            ])
            .arg(format!("--window-size={size}"))
            .arg(format!("--user-data-dir={}", profile_path.display()))
            .args(extra)
            .arg(&page)
            .output()
            .expect("chromium runs");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let run_again = run.clone();
    let dom = tokio::task::spawn_blocking(move || {
        let dom = run("1280,1000", &["--dump-dom"]);
        // Screenshots for people (a desktop and a phone), kept as test artifacts.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
        let _ = std::fs::create_dir_all(&dir);
        for (name, size) in [
            ("dashboard.png", "1280,1500"),
            ("dashboard-phone.png", "390,2600"),
        ] {
            let shot = dir.join(name);
            let _ = std::fs::remove_file(&shot);
            run(size, &[&format!("--screenshot={}", shot.display())]);
            assert!(shot.exists(), "no screenshot at {}", shot.display());
        }
        dom
    })
    .await
    .expect("browser task");
    let stats: Value = get(&format!("{base}/api/stats"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        element(&dom, "peer_id"),
        stats["peer_id"].as_str().expect("peer id")
    );
    for id in [
        "connected_peers",
        "live_workers",
        "services",
        "registry_entries",
        "solved",
    ] {
        assert_eq!(element(&dom, id), stats[id].to_string(), "#{id}");
    }
    assert_eq!(
        element(&dom, "requests_seen"),
        (stats["accepted"]["work-request"].as_u64().unwrap_or(0)
            + stats["submitted"].as_u64().unwrap_or(0))
        .to_string()
    );
    // The service's row counts its requests; every worker appears in the table.
    let services = stats["service_list"].as_array().expect("services");
    assert_eq!(services.len(), 1);
    assert_eq!(services[0]["requests"], 5);
    assert!(dom.contains(services[0]["name"].as_str().expect("name")));
    for w in stats["worker_list"].as_array().expect("workers") {
        assert!(dom.contains(w["account"].as_str().expect("account")));
    }
    // The header left "connecting…": the page had its data, and the stream opened.
    let status = element(&dom, "status");
    assert!(
        status == "live" || status.starts_with("as of "),
        "header says {status:?}"
    );
    // Every chart drew its lines from the inlined history, of several points each.
    for (id, lines) in [
        ("chart_rps", 1),
        ("chart_latency", 2),
        ("chart_hash", 1),
        ("chart_credits", 2),
    ] {
        let plot = inner(&dom, id);
        assert!(plot.contains("<svg"), "#{id} drew no chart");
        assert_eq!(
            plot.matches("class=\"line\"").count(),
            lines,
            "#{id}: {plot}"
        );
        let paths = path_data(plot);
        assert!(paths.len() >= lines, "#{id}: {plot}");
        assert!(paths.iter().all(|d| d.contains('L')), "#{id}: {paths:?}");
    }
    // A sparkline in each worker's row.
    assert!(dom.contains("<th>last hour</th>"));
    let table = inner(&dom, "workers");
    assert_eq!(table.matches("class=\"spark\"").count(), 3, "{table}");
    let sparks = path_data(table);
    assert_eq!(sparks.len(), 3, "{table}");
    assert!(sparks.iter().all(|d| d.contains('L')), "{sparks:?}");

    // With requests coming, the page's activity list shows them as the node told them: the
    // latest in the page, the rest from the stream.
    let asking = {
        let (svc, easiest) = (svc.client(), net.genesis.profile.easiest());
        tokio::spawn(async move {
            for i in 0u8.. {
                let _ = svc
                    .submit(WorkAsk {
                        root: Root([i; 32]),
                        difficulty: easiest,
                        kind: None,
                        account: None,
                        priority: Priority::Normal,
                        lifetime: Duration::from_secs(30),
                    })
                    .await;
            }
        })
    };
    let before = svc.stats().completed;
    wait_for(&svc, T, |s| s.completed >= before + 3)
        .await
        .expect("more requests done");
    let dom = tokio::task::spawn_blocking(move || run_again("1280,1000", &["--dump-dom"]))
        .await
        .expect("browser task");
    asking.abort();
    let activity = inner(&dom, "activity");
    assert!(
        activity.contains("request (own)") && activity.contains("own request done"),
        "activity: {activity}"
    );
}

/// The `d` attribute of every path in `markup`.
fn path_data(markup: &str) -> Vec<&str> {
    markup
        .split("<path d=\"")
        .skip(1)
        .map(|p| &p[..p.find('"').unwrap_or(p.len())])
        .collect()
}
