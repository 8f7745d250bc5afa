//! The genesis file: what makes a network one network.
//!
//! ```toml
//! network = "dpow-testnet"          # topic prefix; nodes of other networks never mix
//! profile = "test"                  # nano | banano | multiplier-proposal | test
//! registrars = ["dpow_1abc..."]     # public keys (dpow_ text or 64 hex digits)
//! bootstrap = ["/ip4/127.0.0.1/tcp/7001/p2p/12D3KooW..."]
//! max_request_lifetime_ms = 600000  # optional
//! max_clock_skew_ms = 5000          # optional
//! epoch_ms = 86400000               # optional: the payout epoch
//! finality_grace_ms = 600000        # optional: see `Finality`
//! ```

use std::path::Path;

use anyhow::{Context, bail};
use dpow_keys::PublicKey;
use dpow_protocol::{Profile, TimePolicy};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

/// Longest genesis file read, in bytes.
const MAX_GENESIS_BYTES: u64 = 64 * 1024;

/// A network's genesis, as read from its TOML file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    /// The network's name: letters, digits, `-` and `_`, at most 32 characters.
    pub network: String,
    /// The difficulty profile's name.
    pub profile: String,
    /// Registrar public keys, as `dpow_` text or hex.
    pub registrars: Vec<String>,
    /// Multiaddrs of bootstrap nodes (with `/p2p/PEER_ID`).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// The longest validity window a request may have.
    #[serde(default)]
    pub max_request_lifetime_ms: Option<u64>,
    /// How far in the future a request's creation time may be.
    #[serde(default)]
    pub max_clock_skew_ms: Option<u64>,
    /// The ledger's epoch length (default a UTC day, 86400000): payouts are per epoch.
    #[serde(default)]
    pub epoch_ms: Option<u64>,
    /// Time after an epoch's last request could expire before the epoch is final
    /// (default ten minutes).
    #[serde(default)]
    pub finality_grace_ms: Option<u64>,
    /// Graduated anti-spam: the windows, their base volumes in credits and the highest class
    /// (`dpow_protocol::volume`); the defaults when absent.
    #[serde(default)]
    pub anti_spam: Option<dpow_protocol::volume::VolumePolicy>,
}

/// A checked genesis.
#[derive(Clone, Debug)]
pub struct Genesis {
    /// The network's name.
    pub network: String,
    /// Its difficulty profile.
    pub profile: Profile,
    /// Keys whose registry entries every node applies.
    pub registrars: Vec<PublicKey>,
    /// Where a new node first connects.
    pub bootstrap: Vec<Multiaddr>,
    /// Timing rules for requests.
    pub time: TimePolicy,
    /// The ledger's epoch length in milliseconds.
    pub epoch_ms: u64,
    /// When epochs close (epoch length, request lifetime, grace).
    pub finality: dpow_protocol::Finality,
    /// Graduated anti-spam classes and relay budgets, enforced by every node.
    pub volume: dpow_protocol::volume::VolumePolicy,
}

impl Genesis {
    /// Check a parsed genesis file.
    pub fn from_file(f: &GenesisFile) -> anyhow::Result<Genesis> {
        let ok_name = !f.network.is_empty()
            && f.network.len() <= 32
            && f.network
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok_name {
            bail!(
                "network name {:?} must be 1 to 32 letters, digits, '-' or '_'",
                f.network
            );
        }
        let profile = Profile::by_name(&f.profile)?;
        if f.registrars.is_empty() {
            bail!("a genesis needs at least one registrar key");
        }
        let registrars = f
            .registrars
            .iter()
            .map(|r| {
                r.trim()
                    .parse::<PublicKey>()
                    .with_context(|| format!("registrar key {r:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bootstrap = f
            .bootstrap
            .iter()
            .map(|a| {
                a.parse::<Multiaddr>()
                    .with_context(|| format!("bootstrap address {a:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut time = TimePolicy::default();
        if let Some(l) = f.max_request_lifetime_ms {
            if l == 0 {
                bail!("max_request_lifetime_ms must be positive");
            }
            time.max_lifetime_ms = l;
        }
        if let Some(s) = f.max_clock_skew_ms {
            time.max_skew_ms = s;
        }
        let epoch_ms = f
            .epoch_ms
            .unwrap_or(dpow_protocol::ledger::DEFAULT_EPOCH_MS);
        if epoch_ms < 1000 {
            bail!("epoch_ms must be at least 1000 (one second), got {epoch_ms}");
        }
        let finality = dpow_protocol::Finality {
            epoch_ms,
            max_lifetime_ms: time.max_lifetime_ms,
            grace_ms: f
                .finality_grace_ms
                .unwrap_or(dpow_protocol::Finality::DEFAULT_GRACE_MS),
        };
        let volume = f.anti_spam.clone().unwrap_or_default();
        volume
            .check()
            .map_err(|e| anyhow::anyhow!("anti_spam: {e}"))?;
        Ok(Genesis {
            volume,
            network: f.network.clone(),
            profile,
            registrars,
            bootstrap,
            time,
            epoch_ms,
            finality,
        })
    }

    /// Read and check a genesis TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Genesis> {
        let text = read_small(path, MAX_GENESIS_BYTES)?;
        Genesis::parse(&text).with_context(|| format!("genesis file {}", path.display()))
    }

    /// Parse and check the text of a genesis file.
    pub fn parse(text: &str) -> anyhow::Result<Genesis> {
        let f: GenesisFile = toml::from_str(text).context("parsing")?;
        Genesis::from_file(&f)
    }

    /// The gossipsub topic for one kind of message on this network.
    pub fn topic(&self, what: &str) -> String {
        format!("/dpow/{}/{what}/1", self.network)
    }
}

/// Read a text file of at most `limit` bytes.
pub fn read_small(path: &Path, limit: u64) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.len() > limit {
        bail!(
            "{} is {} bytes, more than the {limit} allowed",
            path.display(),
            meta.len()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> GenesisFile {
        GenesisFile {
            network: "t-1".into(),
            profile: "test".into(),
            registrars: vec![
                "dpow_1111111111111111111111111111111111111111111111111111hifc8npp".into(),
            ],
            bootstrap: vec![],
            max_request_lifetime_ms: None,
            max_clock_skew_ms: None,
            epoch_ms: None,
            finality_grace_ms: None,
            anti_spam: None,
        }
    }

    #[test]
    fn anti_spam_thresholds_come_from_the_file() {
        let base = "network = \"t-1\"\nprofile = \"test\"\nregistrars = [\"dpow_1111111111111111111111111111111111111111111111111111hifc8npp\"]\n";
        let g = Genesis::parse(base).expect("parses");
        assert_eq!(g.volume, dpow_protocol::volume::VolumePolicy::default());
        let custom = format!(
            "{base}[anti_spam]\nmax_class = 3\nwindows = [{{ window_ms = 10000, base = 50 }}]\n"
        );
        let g = Genesis::parse(&custom).expect("parses");
        assert_eq!(g.volume.max_class, 3);
        assert_eq!(g.volume.windows.len(), 1);
        assert_eq!(g.volume.windows[0].base, 50);
        let zero = format!(
            "{base}[anti_spam]\nmax_class = 3\nwindows = [{{ window_ms = 10000, base = 0 }}]\n"
        );
        let e = format!("{:#}", Genesis::parse(&zero).expect_err("a zero base"));
        assert!(e.contains("anti_spam"), "{e}");
        let unknown = format!("{base}[anti_spam]\nmax_class = 3\nwindows = []\nlimit = 5\n");
        assert!(Genesis::parse(&unknown).is_err());
    }

    #[test]
    fn checks_every_field() {
        assert!(Genesis::from_file(&file()).is_ok());
        let mut f = file();
        f.network = "bad name!".into();
        assert!(Genesis::from_file(&f).is_err());
        let mut f = file();
        f.profile = "nope".into();
        assert!(Genesis::from_file(&f).is_err());
        let mut f = file();
        f.registrars = vec!["nano_1111".into()];
        assert!(Genesis::from_file(&f).is_err());
        let mut f = file();
        f.registrars.clear();
        assert!(Genesis::from_file(&f).is_err());
        let mut f = file();
        f.bootstrap = vec!["not an addr".into()];
        assert!(Genesis::from_file(&f).is_err());
    }

    #[test]
    fn round_trips_through_toml() {
        let f = file();
        let text = toml::to_string(&f).expect("serialises");
        let back: GenesisFile = toml::from_str(&text).expect("parses");
        assert_eq!(back, f);
        assert!(toml::from_str::<GenesisFile>("network = \"x\"\nunknown = 1").is_err());
    }
}
