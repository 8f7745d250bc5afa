//! The node's dashboard, statistics and metrics, on a small network.
//!
//! The browser test runs Debian's Chromium headless; `scripts/test.sh` installs it and sets
//! DPOW_REQUIRE_CHROMIUM=1, so in CI a missing browser fails the test instead of skipping it.
#![allow(clippy::print_stderr)] // says why the browser half was skipped

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dpow_node::net::{NodeHandle, WorkAsk};
use dpow_protocol::{BlockKind, Priority, Root};
use dpow_testnet::local::{LocalNet, LocalOptions, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

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
    // Let statistics settle (lists are rebuilt twice a second).
    wait_for(&svc, T, |s| {
        s.work_by_kind.values().sum::<u64>() >= 5 && s.live_workers == 3
    })
    .await
    .expect("stats settle");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let app = dpow_node::http::router(svc.stats_reader());
    let addr = dpow_node::http::serve(
        "127.0.0.1:0".parse().expect("addr"),
        app,
        std::future::pending(),
    )
    .await
    .expect("binds");
    (net, svc, format!("http://{addr}"))
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

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// The text of the element with `id` in a dumped DOM.
fn element(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("#{id} missing from the page"));
    let rest = &dom[start + id.len() + 6..];
    rest[..rest.find('<').unwrap_or(rest.len())].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_what_the_api_reports() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("DPOW_REQUIRE_CHROMIUM").is_none(),
            "DPOW_REQUIRE_CHROMIUM is set but no chromium is installed"
        );
        eprintln!("skipped: no chromium (scripts/test.sh installs it)");
        return;
    };
    let (_net, _svc, base) = busy_network().await;
    let profile = tempfile::tempdir().expect("profile dir");
    let profile_path = profile.path().to_path_buf();
    let page = format!("{base}/");
    let run = move |extra: &[&str]| {
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
                "--timeout=4000",
                "--window-size=1280,1000",
            ])
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
    let dom = tokio::task::spawn_blocking(move || {
        let dom = run(&["--dump-dom"]);
        // A screenshot for people, kept as a test artifact.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
        let _ = std::fs::create_dir_all(&dir);
        let shot = dir.join("dashboard.png");
        run(&[&format!("--screenshot={}", shot.display())]);
        assert!(shot.exists(), "no screenshot at {}", shot.display());
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
}
