//! The work-server API on a service's node, over real HTTP on loopback:
//! 1. overhead per `work_generate` through the network at 256 expected hashes;
//! 2. cache-hit latency (precached work, re-validated on every hit);
//! 3. concurrent cache-hit calls per second.
//!
//! `cargo bench -p dpow-testnet --bench gateway`.
#![allow(clippy::print_stdout)] // a benchmark report

use std::sync::Arc;
use std::time::{Duration, Instant};

use dpow_node::gateway::{Gateway, GatewayConfig};
use dpow_node::net::percentile;
use dpow_testnet::local::{LocalNet, LocalOptions};
use serde_json::{Value, json};

fn hash(i: u32) -> String {
    format!("{i:08X}{}", "5A".repeat(28))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let net = LocalNet::start(LocalOptions {
        workers: 2,
        rate: None,
        ..LocalOptions::default()
    })
    .await?;
    let svc = Arc::new(net.service_node().await?);
    let dir = tempfile::tempdir()?;
    let store = std::sync::Arc::new(dpow_node::store::Store::open(&dir.path().join("db"))?);
    let gw = Gateway::new(
        svc.client(),
        GatewayConfig {
            profile: net.genesis.profile.clone(),
            fallback: None,
            fallback_after: Duration::from_secs(5),
            request_lifetime: Duration::from_secs(30),
            token: None,
            store: Some(store.clone()),
        },
    );
    let app = dpow_node::http::router(svc.stats_reader()).merge(gw.router());
    let addr = dpow_node::http::serve("127.0.0.1:0".parse()?, app, std::future::pending()).await?;
    let url = format!("http://{addr}/");
    let client = reqwest::Client::new();
    let post = |body: Value| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let t = Instant::now();
            let v: Value = client.post(&url).json(&body).send().await?.json().await?;
            anyhow::Ok((t.elapsed().as_secs_f64() * 1e3, v))
        }
    };

    // 1. Through the network.
    let n = 200;
    let mut lat = Vec::new();
    for i in 0..n {
        let (ms, v) = post(
            json!({"action": "work_generate", "hash": hash(i), "difficulty": "ff00000000000000"}),
        )
        .await?;
        anyhow::ensure!(v["source"] == "network", "unexpected answer {v}");
        lat.push(ms);
    }
    lat.sort_by(f64::total_cmp);
    println!("== work_generate through the swarm, {n} calls at ff00000000000000, 2 workers");
    println!(
        "latency  p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms",
        percentile(&lat, 50.0),
        percentile(&lat, 95.0),
        percentile(&lat, 99.0)
    );

    // 2. Cache hits: precache m roots, then ask for them.
    let m = 50u32;
    for i in 0..m {
        post(json!({"action": "work_precache", "hash": hash(10_000 + i)})).await?;
    }
    let t0 = Instant::now();
    loop {
        let n = store.precache_lines()?.len();
        if n as u32 >= m {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "precache incomplete: {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut hits = Vec::new();
    for round in 0..10 {
        for i in 0..m {
            let (ms, v) =
                post(json!({"action": "work_generate", "hash": hash(10_000 + i)})).await?;
            anyhow::ensure!(v["source"] == "cache", "round {round}: {v}");
            hits.push(ms);
        }
    }
    hits.sort_by(f64::total_cmp);
    println!(
        "\n== cache hits, {} calls over {m} precached roots",
        hits.len()
    );
    println!(
        "latency  p50 {:.3} ms  p95 {:.3} ms  p99 {:.3} ms",
        percentile(&hits, 50.0),
        percentile(&hits, 95.0),
        percentile(&hits, 99.0)
    );

    // 3. Concurrent cache hits.
    let calls = 4000u32;
    let conc = 32;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut sent = 0u32;
    let mut done = 0u32;
    while done < calls {
        while sent < calls && set.len() < conc {
            set.spawn(post(
                json!({"action": "work_generate", "hash": hash(10_000 + sent % m)}),
            ));
            sent += 1;
        }
        if let Some(r) = set.join_next().await {
            let (_, v) = r??;
            anyhow::ensure!(v["source"] == "cache", "{v}");
            done += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "\n== {calls} cache-hit calls, {conc} concurrent: {:.0} calls/s",
        f64::from(calls) / secs
    );
    Ok(())
}
