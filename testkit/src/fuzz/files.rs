//! Harnesses for the files a user writes: the genesis file and the node's config file.
//!
//! Properties: a genesis file that parses re-serialises to TOML that parses to the same file,
//! and one that is accepted keeps every rule `Genesis::from_file` states; a config that parses
//! prints (`to_toml`, as `--print-config` does) a file that parses to the same options, the
//! token shown only as set.

use std::path::Path;

use dpow_node::config::Config;
use dpow_node::genesis::{Genesis, GenesisFile};

use crate::builders::key;

/// Genesis files: TOML into `GenesisFile`, a TOML round trip, then `Genesis::parse`.
pub fn genesis(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(file) = toml::from_str::<GenesisFile>(text) {
        let again = toml::to_string(&file).expect("a parsed genesis file serialises");
        let back: GenesisFile = toml::from_str(&again).expect("and parses again");
        assert_eq!(back, file, "a genesis file round-trips through TOML");
    }
    let Ok(g) = Genesis::parse(text) else {
        return;
    };
    assert!(!g.network.is_empty() && g.network.len() <= 32);
    assert!(
        g.network
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert!(!g.registrars.is_empty());
    assert!(g.epoch_ms >= 1000);
    assert!(g.time.max_lifetime_ms > 0);
    assert_eq!(g.finality.epoch_ms, g.epoch_ms);
    assert_eq!(g.finality.max_lifetime_ms, g.time.max_lifetime_ms);
    g.profile
        .validate()
        .expect("a built-in profile is coherent");
    assert_eq!(
        g.topic("requests"),
        format!("/dpow/{}/{}/requests/1", g.network, g.id.short())
    );
    let canonical = g.canonical().expect("a checked genesis encodes");
    assert_eq!(
        g.id,
        dpow_protocol::NetworkId::of_canonical_genesis(&canonical),
        "the id is the hash of the canonical genesis"
    );
}

/// The options of a config as JSON, the token as `to_toml` shows it.
fn options(c: &Config) -> serde_json::Value {
    let mut v = serde_json::to_value(c).unwrap();
    if let Some(t) = v.get_mut("http_token")
        && !t.is_null()
    {
        *t = serde_json::Value::String("(set, not shown)".into());
    }
    v
}

/// Config files: `Config::from_toml` (TOML, unknown keys refused, typed values), then what
/// `--print-config` prints parses back to the same options; defaults fill in without panic.
pub fn config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let Ok(c) = Config::from_toml(text, path) else {
        return;
    };
    let printed = c.to_toml();
    let back = Config::from_toml(&printed, path)
        .unwrap_or_else(|e| panic!("the printed config does not parse: {e}\n{printed}"));
    assert_eq!(options(&back), options(&c), "printed:\n{printed}");
    let _ = c.with_defaults().to_toml();
}

pub(super) fn genesis_seeds() -> Vec<Vec<u8>> {
    let registrar = key(1).public().to_string();
    let peer = libp2p::identity::Keypair::ed25519_from_bytes([3u8; 32])
        .unwrap()
        .public()
        .to_peer_id();
    let full = format!(
        "network = \"dpow-testnet\"\nprofile = \"test\"\nregistrars = [\"{registrar}\", \"{}\"]\n\
         bootstrap = [\"/ip4/127.0.0.1/tcp/7001/p2p/{peer}\"]\n\
         max_request_lifetime_ms = 600000\nmax_clock_skew_ms = 5000\nepoch_ms = 86400000\n\
         finality_grace_ms = 600000\n",
        key(2).public().to_hex()
    );
    let small = format!("network = \"n\"\nprofile = \"nano\"\nregistrars = [\"{registrar}\"]\n");
    vec![full.into_bytes(), small.into_bytes()]
}

pub(super) fn config_seeds() -> Vec<Vec<u8>> {
    let full = "genesis = \"genesis.toml\"\ndata_dir = \"/var/lib/dpow\"\nkey = \"node.key\"\n\
        listen = [\"/ip4/0.0.0.0/tcp/7075\"]\ndial = [\"/ip4/10.0.0.1/tcp/7075\"]\n\
        role = [\"worker\", \"service\"]\nservice_key = \"service.key\"\n\
        payout = \"nano_1111111111111111111111111111111111111111111111111111hifc8npp\"\n\
        http = \"127.0.0.1:7076\"\nhttp_token = \"secret\"\nstatus_interval = 5.0\n\
        exhausted = \"refuse\"\nreplication = 3\nledger_sync = 60\nfallback_after = 5\n\
        threads = 2\nbackend = \"portable\"\ngpu = [\"0:0\"]\n";
    vec![full.as_bytes().to_vec(), b"role = [\"worker\"]\n".to_vec()]
}
