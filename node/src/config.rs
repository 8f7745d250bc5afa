//! `dpow node`'s configuration: one [`Config`], read from a TOML file, the environment and the
//! command line, each overriding the one before (a flag beats a `DPOW_*` variable, which beats
//! the file). Every flag has a key in the file (the flag's name with `_` for `-`) and an
//! environment variable (`DPOW_` and the key in capitals); a key the file does not know is
//! refused with the list of known ones. `dpow node --print-config` shows the merged result.
//!
//! The genesis file holds what a whole network agrees on; this file holds what one node does.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::{Args, ValueEnum};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::devices::DeviceArgs;

/// Longest config file read, in bytes.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;
/// Where a node keeps its key and database unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "dpow-data";
/// The libp2p listen addresses unless told otherwise: TCP and QUIC on the same port number.
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/7075", "/ip4/0.0.0.0/udp/7075/quic-v1"];
/// The HTTP address (dashboard, statistics, work API) unless told otherwise.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7076";
/// Seconds between a worker's status announcements unless told otherwise.
pub const DEFAULT_STATUS_INTERVAL: f64 = 5.0;
/// Seconds between ledger digest comparisons unless told otherwise.
pub const DEFAULT_LEDGER_SYNC: f64 = 60.0;
/// Seconds a service waits for the network before solving locally unless told otherwise.
pub const DEFAULT_FALLBACK_AFTER: f64 = 5.0;

/// A node's role besides relaying and validating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Solve requests and earn credits.
    Worker,
    /// Submit requests signed with a service key (see `--service-key`).
    Service,
}

impl Role {
    /// The role's name, as the flag and the file write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Service => "service",
        }
    }
}

/// Whether peers can dial a node (`--reachability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReachabilityArg {
    /// Ask peers to dial back (AutoNAT) and act on the answer (the default).
    Auto,
    /// Reachable at its listen addresses (an open port): a DHT server from the start.
    Public,
    /// Not reachable: a DHT client that keeps a relay reservation.
    Private,
}

impl From<ReachabilityArg> for crate::net::Reachability {
    fn from(r: ReachabilityArg) -> Self {
        match r {
            ReachabilityArg::Auto => crate::net::Reachability::Auto,
            ReachabilityArg::Public => crate::net::Reachability::Public,
            ReachabilityArg::Private => crate::net::Reachability::Private,
        }
    }
}

/// What a worker does with requests from services whose credits are spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exhausted {
    /// Solve them only when nothing else waits (the default).
    Deprioritise,
    /// Ignore them.
    Refuse,
}

/// Everything `dpow node` can be told. `None`, `false` and an empty list mean "not set here":
/// a source further down the chain (file, then defaults) decides.
#[derive(Clone, Debug, Default, Args, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// A TOML file with any of the options below (keys as the flags, `_` for `-`).
    #[arg(long, env = "DPOW_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the merged configuration (file, environment, flags and defaults) and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
    /// The network's genesis file (TOML).
    #[arg(long, env = "DPOW_GENESIS", value_name = "FILE")]
    pub genesis: Option<PathBuf>,
    /// Where the node keeps its key and data (default: ./dpow-data).
    #[arg(long, env = "DPOW_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The node key (created if missing; default: DATA_DIR/node.key).
    #[arg(long, env = "DPOW_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// libp2p listen addresses (default: /ip4/0.0.0.0/tcp/7075 and
    /// /ip4/0.0.0.0/udp/7075/quic-v1). Repeatable or comma-separated.
    #[arg(
        long,
        env = "DPOW_LISTEN",
        value_delimiter = ',',
        value_name = "MULTIADDR"
    )]
    #[serde(with = "text_vec")]
    pub listen: Vec<Multiaddr>,
    /// Extra peers to dial besides the genesis bootstrap list. Repeatable or comma-separated.
    #[arg(
        long,
        env = "DPOW_DIAL",
        value_delimiter = ',',
        value_name = "MULTIADDR"
    )]
    #[serde(with = "text_vec")]
    pub dial: Vec<Multiaddr>,
    /// Roles, comma-separated: worker, service (default: relay only).
    #[arg(long, env = "DPOW_ROLE", value_delimiter = ',', value_name = "ROLE,..")]
    pub role: Vec<Role>,
    /// The service key requests are signed with (service role).
    #[arg(long, env = "DPOW_SERVICE_KEY", value_name = "FILE")]
    pub service_key: Option<PathBuf>,
    /// Worker role: the nano_ account of your own wallet that earnings are paid to.
    #[arg(long, env = "DPOW_PAYOUT", value_name = "ACCOUNT")]
    pub payout: Option<String>,
    /// HTTP address for the dashboard, statistics and (service role) the work API
    /// (default: 127.0.0.1:7076; `off` to disable).
    #[arg(long, env = "DPOW_HTTP", value_name = "ADDR")]
    pub http: Option<String>,
    /// Bearer token the work API and, off loopback, the statistics require (needed when
    /// --http is not loopback).
    #[arg(
        long,
        env = "DPOW_HTTP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub http_token: Option<String>,
    /// Serve the dashboard, /api/* statistics and /metrics to anyone when --http is not
    /// loopback (by default they require --http-token there).
    #[arg(long, env = "DPOW_PUBLIC_STATS")]
    pub public_stats: bool,
    /// Worker role: seconds between status announcements (default 5).
    #[arg(long, env = "DPOW_STATUS_INTERVAL", value_name = "SECS")]
    pub status_interval: Option<f64>,
    /// Worker role: announce this hash rate (H/s) instead of measuring it.
    #[arg(long, env = "DPOW_ANNOUNCE_RATE", value_name = "H/S")]
    pub announce_rate: Option<u64>,
    /// Do not walk the DHT for more peers (stay with the bootstrap and dialled peers).
    #[arg(long, env = "DPOW_NO_DISCOVERY")]
    pub no_discovery: bool,
    /// Whether peers can dial this node: auto (ask them: AutoNAT), public (an open port) or
    /// private (behind a NAT: keep a relay reservation). Default auto; a node listening
    /// only on loopback counts as public.
    #[arg(long, env = "DPOW_REACHABILITY", value_enum, value_name = "HOW")]
    pub reachability: Option<ReachabilityArg>,
    /// Do not offer circuit relay to private peers (offered by default, within small limits,
    /// and only used when this node is reachable).
    #[arg(long, env = "DPOW_NO_RELAY")]
    pub no_relay: bool,
    /// Peers on private addresses (10/8, 172.16/12, 192.168/16) count when judging
    /// reachability: for a network on a LAN. Off on the internet.
    #[arg(long, env = "DPOW_LAN")]
    pub lan: bool,
    /// Check the signatures of every stored receipt again at start-up and delete those that
    /// fail (about 100 s per million receipts on two cores). Off by default: only verified
    /// receipts are written, and the store's checksums catch corruption.
    #[arg(long, env = "DPOW_VERIFY_STORE")]
    pub verify_store: bool,
    /// A light ledger: keep each final epoch that a registrar's checkpoint vouches for as
    /// that checkpoint alone instead of fetching its receipts, so joining a network with a
    /// long history takes seconds. Balances per payout account and payouts stay exact;
    /// credits per worker key and per service count only the epochs held in full.
    #[arg(long, env = "DPOW_ADOPT_CHECKPOINTS")]
    pub adopt_checkpoints: bool,
    /// Worker role: what to do with requests of services whose credits are spent
    /// (default: deprioritise).
    #[arg(long, env = "DPOW_EXHAUSTED", value_enum, value_name = "POLICY")]
    pub exhausted: Option<Exhausted>,
    /// Peers a node puts each receipt it made to as a DHT record (the Kademlia replication
    /// factor, 1 to 20; default 3). Every full node also answers look-ups for what it holds.
    #[arg(long, env = "DPOW_REPLICATION", value_name = "K")]
    pub replication: Option<usize>,
    /// Seconds between comparing ledger digests with a random peer, besides on connecting
    /// (default 60).
    #[arg(long, env = "DPOW_LEDGER_SYNC", value_name = "SECS")]
    pub ledger_sync: Option<f64>,
    /// Service role: seconds to wait for the network before solving locally as well
    /// (default 5).
    #[arg(long, env = "DPOW_FALLBACK_AFTER", value_name = "SECS")]
    pub fallback_after: Option<f64>,
    /// Service role: CPU threads for local fallback (default 0 = every core).
    #[arg(long, env = "DPOW_FALLBACK_THREADS", value_name = "N")]
    pub fallback_threads: Option<usize>,
    /// Service role: never solve locally; wait for the network.
    #[arg(long, env = "DPOW_NO_FALLBACK")]
    pub no_fallback: bool,
    /// Service role: a Nano node's websocket (e.g. ws://127.0.0.1:7078); confirmed blocks of
    /// accounts seen in calls get their next work precached.
    #[arg(long, env = "DPOW_NANO_WEBSOCKET", value_name = "URL")]
    pub nano_websocket: Option<String>,
    /// Serve browser workers: the `/contribute` page, its solver files under `/browser/` and
    /// the WebSocket bridge `/contribute/ws` that carries their signed statuses and results
    /// (needs the HTTP server).
    #[arg(long, env = "DPOW_BROWSER_WORKERS")]
    pub browser_workers: bool,
    /// Browser workers: other nodes' HTTP base URLs (e.g. `http://host:8080`) that serve
    /// `/contribute`, comma-separated; the page moves to one of them if this node goes away.
    #[arg(
        long,
        env = "DPOW_BROWSER_PEERS",
        value_delimiter = ',',
        value_name = "URL,.."
    )]
    pub browser_peers: Vec<String>,
    /// Worker devices.
    #[command(flatten)]
    #[serde(flatten)]
    pub devices: DeviceArgs,
}

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("reading config {path}: {why}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The file is not TOML, or a value has the wrong type or does not parse.
    #[error("config {path}: {why}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The file names keys that no option has.
    #[error("config {path}: unknown key(s) {unknown}; the known keys are: {known}")]
    UnknownKeys {
        /// The file.
        path: PathBuf,
        /// The keys refused.
        unknown: String,
        /// Every key a config file may hold.
        known: String,
    },
}

impl Config {
    /// Every key a config file may hold, in the order of the reference.
    pub fn known_keys() -> Vec<String> {
        match serde_json::to_value(Config::default()) {
            Ok(Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Read the file named by `self.config` (if any) and lay `self` (the flags and environment,
    /// as clap parsed them) over it.
    pub fn merged(self) -> Result<Config, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = read_file(&path)?;
        let flags = to_object(&self);
        let mut merged = file;
        for (k, v) in flags {
            if is_set(&v) {
                merged.insert(k, v);
            }
        }
        let mut c: Config =
            serde_json::from_value(Value::Object(merged)).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                why: e.to_string(),
            })?;
        c.config = Some(path);
        c.print_config = self.print_config;
        Ok(c)
    }

    /// The options a config file's text sets, and nothing from flags, the environment or
    /// defaults; `path` names the file in errors. [`Config::merged`] reads files this way.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let m = parse_text(text, path)?;
        serde_json::from_value(Value::Object(m)).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            why: e.to_string(),
        })
    }

    /// The same configuration with every unset value that has a default given it, so that what
    /// `--print-config` shows is what the node runs with.
    pub fn with_defaults(mut self) -> Config {
        let data_dir = self
            .data_dir
            .get_or_insert_with(|| PathBuf::from(DEFAULT_DATA_DIR))
            .clone();
        self.key.get_or_insert_with(|| data_dir.join("node.key"));
        if self.listen.is_empty() {
            self.listen
                .extend(DEFAULT_LISTEN.iter().filter_map(|a| a.parse().ok()));
        }
        self.reachability.get_or_insert(ReachabilityArg::Auto);
        self.http.get_or_insert_with(|| DEFAULT_HTTP.to_string());
        self.status_interval.get_or_insert(DEFAULT_STATUS_INTERVAL);
        self.exhausted.get_or_insert(Exhausted::Deprioritise);
        self.replication
            .get_or_insert(crate::net::DEFAULT_REPLICATION.get());
        self.ledger_sync.get_or_insert(DEFAULT_LEDGER_SYNC);
        if self.role.contains(&Role::Service) {
            self.fallback_after.get_or_insert(DEFAULT_FALLBACK_AFTER);
            self.fallback_threads.get_or_insert(0);
        }
        if self.role.contains(&Role::Worker) {
            self.devices.threads.get_or_insert(0);
        }
        self
    }

    /// The configuration as a TOML file that would give the same node; a token is shown only
    /// as set or not.
    pub fn to_toml(&self) -> String {
        let mut m = to_object(self);
        m.retain(|_, v| !v.is_null());
        if m.contains_key("http_token") {
            m.insert(
                "http_token".into(),
                Value::String("(set, not shown)".into()),
            );
        }
        toml::to_string_pretty(&Value::Object(m)).unwrap_or_default()
    }
}

fn to_object(c: &Config) -> Map<String, Value> {
    match serde_json::to_value(c) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// A value that says something: not null, not `false`, not an empty list.
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

fn read_file(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let text =
        crate::genesis::read_small(path, MAX_CONFIG_BYTES).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            why: format!("{e:#}"),
        })?;
    parse_text(&text, path)
}

/// The keys a config file's text sets, refused if any is unknown; `path` names it in errors.
fn parse_text(text: &str, path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let Ok(Value::Object(m)) = serde_json::to_value(table) else {
        return Err(ConfigError::Parse {
            path: path.to_path_buf(),
            why: "not a table of keys".into(),
        });
    };
    let known = Config::known_keys();
    let mut unknown: Vec<&String> = m.keys().filter(|k| !known.contains(k)).collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(ConfigError::UnknownKeys {
            path: path.to_path_buf(),
            unknown: unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
            known: known.join(", "),
        });
    }
    Ok(m)
}

/// Serde for an `Option<T>` written as its text (`Display` / `FromStr`).
pub(crate) mod text_opt {
    use super::*;
    use serde::de::Error as _;

    pub(crate) fn serialize<S: serde::Serializer, T: Display>(
        v: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(t) => s.serialize_some(&t.to_string()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: serde::Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        match Option::<String>::deserialize(d)? {
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|e| D::Error::custom(format!("{s:?}: {e}"))),
            None => Ok(None),
        }
    }
}

/// Serde for a `Vec<T>` written as a list of texts (`Display` / `FromStr`).
pub(crate) mod text_vec {
    use super::*;
    use serde::de::Error as _;

    pub(crate) fn serialize<S: serde::Serializer, T: Display>(
        v: &[T],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(ToString::to_string))
    }

    pub(crate) fn deserialize<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: serde::Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|e| D::Error::custom(format!("{s:?}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.toml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    fn with_file(p: &Path) -> Config {
        Config {
            config: Some(p.to_path_buf()),
            ..Config::default()
        }
    }

    #[test]
    fn every_flag_has_a_key() {
        let keys = Config::known_keys();
        for k in [
            "genesis",
            "data_dir",
            "key",
            "listen",
            "dial",
            "role",
            "service_key",
            "payout",
            "http",
            "http_token",
            "public_stats",
            "status_interval",
            "announce_rate",
            "no_discovery",
            "reachability",
            "no_relay",
            "lan",
            "verify_store",
            "adopt_checkpoints",
            "exhausted",
            "replication",
            "ledger_sync",
            "fallback_after",
            "fallback_threads",
            "no_fallback",
            "nano_websocket",
            "browser_workers",
            "browser_peers",
            "threads",
            "backend",
            "gpu",
            "no_cpu",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
        assert!(!keys.iter().any(|x| x == "config" || x == "print_config"));
    }

    #[test]
    fn the_file_fills_what_the_flags_leave_unset() {
        let (_d, p) = write(
            "genesis = \"g.toml\"\nrole = [\"worker\"]\nthreads = 3\nbackend = \"portable\"\n\
             listen = [\"/ip4/127.0.0.1/tcp/9\"]\nno_fallback = true\nhttp_token = \"t\"\n",
        );
        let mut flags = with_file(&p);
        flags.devices.threads = Some(1);
        flags.http = Some("off".into());
        let c = flags.merged().unwrap();
        assert_eq!(c.genesis, Some(PathBuf::from("g.toml")));
        assert_eq!(c.role, vec![Role::Worker]);
        assert_eq!(c.devices.threads, Some(1), "a flag beats the file");
        assert_eq!(c.devices.backend, Some(dpow_solver::cpu::Backend::Portable));
        assert_eq!(c.listen[0].to_string(), "/ip4/127.0.0.1/tcp/9");
        assert!(c.no_fallback);
        assert_eq!(c.http.as_deref(), Some("off"));
        assert_eq!(c.http_token.as_deref(), Some("t"));
        assert_eq!(c.config.as_deref(), Some(p.as_path()));
    }

    #[test]
    fn unknown_keys_are_refused_with_the_known_ones() {
        let (_d, p) = write("genesis = \"g\"\nthreds = 2\n");
        let e = with_file(&p).merged().unwrap_err().to_string();
        assert!(e.contains("`threds`"), "{e}");
        assert!(e.contains("threads") && e.contains("http_token"), "{e}");
    }

    #[test]
    fn bad_values_name_the_file_and_the_value() {
        let (_d, p) = write("listen = [\"not an address\"]\n");
        let e = with_file(&p).merged().unwrap_err().to_string();
        assert!(
            e.contains("node.toml") && e.contains("not an address"),
            "{e}"
        );
        let (_d, p) = write("role = [\"miner\"]\n");
        let e = with_file(&p).merged().unwrap_err().to_string();
        assert!(e.contains("miner"), "{e}");
        let (_d, p) = write("threads = \"many\"\n");
        assert!(with_file(&p).merged().is_err());
        let (_d, p) = write("this is not toml");
        assert!(matches!(
            with_file(&p).merged(),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn defaults_are_filled_and_printed_without_the_token() {
        let c = Config {
            role: vec![Role::Worker],
            http_token: Some("secret-token".into()),
            ..Config::default()
        }
        .with_defaults();
        assert_eq!(c.data_dir, Some(PathBuf::from(DEFAULT_DATA_DIR)));
        assert_eq!(
            c.key,
            Some(PathBuf::from(DEFAULT_DATA_DIR).join("node.key"))
        );
        assert_eq!(c.http.as_deref(), Some(DEFAULT_HTTP));
        let text = c.to_toml();
        assert!(!text.contains("secret-token"), "{text}");
        assert!(text.contains("http_token"), "{text}");
        // What is printed reads back as the same configuration.
        let (_d, p) = write(&text.replace("(set, not shown)", "x"));
        let back = with_file(&p).merged().unwrap();
        assert_eq!(back.listen, c.listen);
        assert_eq!(back.devices.threads, Some(0));
        assert_eq!(back.exhausted, Some(Exhausted::Deprioritise));
    }
}
