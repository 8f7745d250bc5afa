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
//!
//! The network id ([`NetworkId`]) is the hash of the *canonical genesis* ([`Genesis::canonical`]):
//! the name, the profile (name and thresholds), the registrar keys (sorted), the effective
//! timing rules and anti-spam policy (defaults filled in), postcard-encoded. Bootstrap addresses are not part of it:
//! they can change without making another network.

use std::path::Path;

use anyhow::{Context, bail};
use dpow_keys::PublicKey;
use dpow_protocol::{NetworkId, Profile, TimePolicy};
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
    /// The network id: the hash of [`Genesis::canonical`].
    pub id: NetworkId,
}

/// The fields of a genesis that define its network, in their canonical order.
#[derive(Serialize)]
struct Canonical<'a> {
    network: &'a str,
    profile: &'a Profile,
    registrars: Vec<PublicKey>,
    max_request_lifetime_ms: u64,
    max_clock_skew_ms: u64,
    epoch_ms: u64,
    finality_grace_ms: u64,
    volume: &'a dpow_protocol::volume::VolumePolicy,
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
        let mut g = Genesis {
            volume,
            network: f.network.clone(),
            profile,
            registrars,
            bootstrap,
            time,
            epoch_ms,
            finality,
            id: NetworkId([0; 32]),
        };
        g.seal()?;
        Ok(g)
    }

    /// Set [`Genesis::id`] from the other fields: after building or changing a genesis in code.
    pub fn seal(&mut self) -> anyhow::Result<()> {
        self.id = NetworkId::of_canonical_genesis(&self.canonical()?);
        Ok(())
    }

    /// The canonical genesis: the fields that define the network (not the bootstrap
    /// addresses), registrar keys sorted and deduplicated, defaults filled in, encoded with the
    /// protocol's canonical codec. Its hash is the network id.
    pub fn canonical(&self) -> anyhow::Result<Vec<u8>> {
        let mut registrars = self.registrars.clone();
        registrars.sort();
        registrars.dedup();
        let c = Canonical {
            network: &self.network,
            profile: &self.profile,
            registrars,
            max_request_lifetime_ms: self.time.max_lifetime_ms,
            max_clock_skew_ms: self.time.max_skew_ms,
            epoch_ms: self.epoch_ms,
            finality_grace_ms: self.finality.grace_ms,
            volume: &self.volume,
        };
        Ok(dpow_protocol::codec::encode(&c, "genesis")?)
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

    /// The gossipsub topic for one kind of message on this network: named by the network's
    /// name and the short form of its id, so networks sharing a name still never mix.
    pub fn topic(&self, what: &str) -> String {
        format!("/dpow/{}/{}/{what}/1", self.network, self.id.short())
    }

    /// Identify's protocol version: a peer announcing another is of another network.
    pub fn identify_version(&self) -> String {
        format!("/dpow/{}/{}/2", self.network, self.id.short())
    }

    /// A libp2p stream protocol name (`/dpow/<short id>/<what>`) bound to this network.
    pub fn protocol(&self, what: &str) -> String {
        format!("/dpow/{}/{what}", self.id.short())
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
    fn network_id_binds_what_defines_the_network_and_nothing_else() {
        let base = Genesis::from_file(&file()).expect("valid").id;
        let mut f = file();
        f.bootstrap = vec!["/ip4/127.0.0.1/tcp/7001".into()];
        assert_eq!(Genesis::from_file(&f).expect("valid").id, base);
        let mut f = file();
        f.epoch_ms = Some(dpow_protocol::ledger::DEFAULT_EPOCH_MS);
        assert_eq!(
            Genesis::from_file(&f).expect("valid").id,
            base,
            "a default spelt out"
        );
        let text = toml::to_string(&file()).expect("serialises");
        let spaced = text.replace(" = ", "   =   ") + "\n# a comment\n";
        assert_eq!(Genesis::parse(&spaced).expect("valid").id, base);
        let changes: [fn(&mut GenesisFile); 8] = [
            |f| f.network = "t-2".into(),
            |f| f.profile = "nano".into(),
            |f| {
                let other = dpow_keys::SecretKey::from_seed([9; 32]).public();
                f.registrars.push(other.to_hex());
            },
            |f| f.max_request_lifetime_ms = Some(1000),
            |f| f.max_clock_skew_ms = Some(1),
            |f| f.epoch_ms = Some(3_600_000),
            |f| f.finality_grace_ms = Some(1),
            |f| {
                f.anti_spam = Some(dpow_protocol::volume::VolumePolicy {
                    max_class: 3,
                    ..Default::default()
                })
            },
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut f = file();
            change(&mut f);
            let g = Genesis::from_file(&f).expect("valid");
            assert_ne!(g.id, base, "change {i} must make another network");
        }
        let g = Genesis::from_file(&file()).expect("valid");
        assert!(g.topic("requests").contains(&g.id.short()));
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
