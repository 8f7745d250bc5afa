//! What the work-API test files share: a gateway served over real HTTP on loopback on top of a
//! [`LocalNet`], and a small JSON client for it.
// Each test file uses part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dpow_node::gateway::{Gateway, GatewayConfig};
use dpow_node::net::NodeHandle;
use dpow_node::store::Store;
use dpow_protocol::{Profile, Root, Work};
use dpow_solver::{CpuSolver, Solver};
use dpow_testnet::local::{LocalNet, LocalOptions, LocalTransport};
use serde_json::Value;

/// A block hash in Nano's spelling (64 upper-case hex digits).
pub(crate) const HASH: &str = "7F7122E843B27524F4F1D6BD14AEFD1C8F01D36AE8653D37417533C0D4BC2BE6";
/// How long any one wait may take.
pub(crate) const T: Duration = Duration::from_secs(20);

/// `HASH` with its first byte replaced by `i`: distinct roots per call.
pub(crate) fn hash(i: u8) -> String {
    let mut h = HASH.to_string();
    h.replace_range(0..2, &format!("{i:02X}"));
    h
}

/// The work value by an implementation independent of the protocol crate's.
pub(crate) fn reference_value(root: &str, work: &str) -> u64 {
    let root: Root = root.parse().expect("root");
    let work: Work = work.parse().expect("work");
    dpow_testkit::reference::work_value(&root, work)
}

/// A gateway's address and a client for it.
pub(crate) struct Api {
    pub(crate) url: String,
    pub(crate) addr: SocketAddr,
    pub(crate) client: reqwest::Client,
    pub(crate) token: Option<String>,
    /// The gateway's count of precached works kept.
    pub(crate) precached: tokio::sync::watch::Receiver<u64>,
}

impl Api {
    pub(crate) async fn post(&self, body: Value) -> (u16, Value) {
        self.post_raw(body.to_string().into_bytes()).await
    }

    pub(crate) async fn post_raw(&self, body: Vec<u8>) -> (u16, Value) {
        let mut r = self.client.post(&self.url).body(body);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.expect("the server answers");
        let status = resp.status().as_u16();
        let v = resp.json::<Value>().await.expect("a JSON body");
        (status, v)
    }

    /// The same gateway, called with another token (or none).
    pub(crate) fn with_token(&self, token: Option<&str>) -> Api {
        Api {
            url: self.url.clone(),
            addr: self.addr,
            client: reqwest::Client::new(),
            token: token.map(str::to_string),
            precached: self.precached.clone(),
        }
    }
}

pub(crate) fn open_store(dir: &tempfile::TempDir) -> Arc<Store> {
    Arc::new(Store::open(&dir.path().join("db")).expect("store"))
}

/// The precache lines stored, as text.
pub(crate) fn stored_lines(store: &Store) -> Vec<String> {
    store
        .precache_lines()
        .expect("lines")
        .into_iter()
        .map(|l| String::from_utf8(l).expect("utf-8"))
        .collect()
}

/// Whether the precache kept in `store` holds work for block hash `hash`.
pub(crate) fn holds(store: &Store, hash: &str) -> bool {
    stored_lines(store)
        .concat()
        .to_uppercase()
        .contains(&hash.to_uppercase())
}

/// A gateway config: a one-thread CPU fallback when `fallback`, 30 s requests, no token.
pub(crate) fn config(profile: Profile, fallback: bool, store: &Arc<Store>) -> GatewayConfig {
    GatewayConfig {
        profile,
        fallback: fallback.then(|| Arc::new(CpuSolver::new(1).expect("cpu")) as Arc<dyn Solver>),
        fallback_after: Duration::from_secs(5),
        request_lifetime: Duration::from_secs(30),
        token: None,
        store: Some(store.clone()),
    }
}

/// Serve a gateway over `node` (with the node's own routes, as `dpow node` does) on loopback.
pub(crate) async fn serve(node: Arc<NodeHandle>, config: GatewayConfig) -> Api {
    let token = config.token.clone();
    let gw = Gateway::new(node.client(), config);
    serve_gateway(&node, &gw, token).await
}

/// Serve an existing gateway over `node` on loopback.
pub(crate) async fn serve_gateway(
    node: &NodeHandle,
    gw: &Arc<Gateway>,
    token: Option<String>,
) -> Api {
    let app = dpow_node::http::router(node.stats_reader()).merge(gw.router());
    let addr = dpow_testnet::local::serve_http(app).await;
    Api {
        url: format!("http://{addr}/"),
        addr,
        client: reqwest::Client::new(),
        token,
        precached: gw.precached(),
    }
}

/// Wait until `ok` holds, looking again each time the gateway keeps a precached work
/// (`saved`, from [`Gateway::precached`]); fails naming `what` after [`T`].
pub(crate) async fn when_precached(
    saved: &tokio::sync::watch::Receiver<u64>,
    what: &str,
    mut ok: impl FnMut() -> bool,
) {
    let mut saved = saved.clone();
    let held = match tokio::time::timeout(T, saved.wait_for(|_| ok())).await {
        Ok(Ok(_)) => true,
        // The gateway is gone: what it saved is all there is.
        Ok(Err(_)) => ok(),
        Err(_) => false,
    };
    assert!(held, "{what}");
}

/// A local network with `workers` workers and a service node on it.
pub(crate) async fn network(workers: usize) -> (LocalNet, Arc<NodeHandle>) {
    let net = LocalNet::start(LocalOptions {
        transport: LocalTransport::Memory,
        workers,
        ..LocalOptions::default()
    })
    .await
    .expect("network");
    let svc = Arc::new(net.service_node().await.expect("service node"));
    (net, svc)
}
