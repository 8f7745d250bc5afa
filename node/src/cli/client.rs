//! A short-lived node for one-shot commands (`dpow request`, `dpow registry`): it joins the
//! network with a throwaway identity, does its job through its peers, and leaves.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use dpow_keys::SecretKey;
use libp2p::Multiaddr;

use crate::genesis::Genesis;
use crate::net::{self, NodeConfig, NodeHandle};

/// How a one-shot command reaches the network.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The network's genesis file.
    #[arg(long, value_name = "FILE")]
    pub genesis: PathBuf,
    /// Peers to go through (default: the genesis bootstrap list), repeatable.
    #[arg(long, value_name = "MULTIADDR")]
    pub dial: Vec<Multiaddr>,
    /// Seconds to wait for peers.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub connect_timeout: f64,
}

impl ClientArgs {
    /// Start the client node and wait until a peer has synced it and listens on the topics.
    /// It takes no part in the ledger (no catch-up): see [`ClientArgs::connect_with_books`].
    pub async fn connect(&self, service_key: Option<SecretKey>) -> anyhow::Result<NodeHandle> {
        self.start(service_key, false).await
    }

    /// As [`ClientArgs::connect`], and wait until the node has caught up with its first
    /// peer's ledger (every receipt verified here).
    pub async fn connect_with_books(&self) -> anyhow::Result<NodeHandle> {
        self.start(None, true).await
    }

    async fn start(
        &self,
        service_key: Option<SecretKey>,
        books: bool,
    ) -> anyhow::Result<NodeHandle> {
        let genesis = Genesis::load(&self.genesis)?;
        if genesis.bootstrap.is_empty() && self.dial.is_empty() {
            anyhow::bail!(
                "no peer to reach: the genesis has no bootstrap list and no --dial was given"
            );
        }
        if !(self.connect_timeout.is_finite() && self.connect_timeout > 0.0) {
            anyhow::bail!("--connect-timeout must be a positive number of seconds");
        }
        let timeout = Duration::from_secs_f64(self.connect_timeout);
        let mut config = NodeConfig::new(genesis, SecretKey::generate()?);
        if !self.dial.is_empty() {
            // Go through the named peers only.
            config.genesis.bootstrap.clear();
            config.dial = self.dial.clone();
        }
        if service_key.is_some() {
            // Its requests name this node as the one to hand results to: listen (on an
            // ephemeral port) so that workers that can reach it deliver straight here;
            // those that cannot fall back to gossip.
            config.listen = vec!["/ip4/0.0.0.0/tcp/0".parse().context("the listen address")?];
        }
        config.service_key = service_key;
        config.tuning.discovery = false;
        config.tuning.ledger = books;
        config.tuning.auditor = books;
        // A short-lived client serves nothing: no DHT records (Kademlia stays a client until
        // AutoNAT confirms an address, which it will not wait for) and no relay.
        config.tuning.relay_server = false;
        let node = net::spawn(config)
            .await
            .context("starting the client node")?;
        node.wait_for_peers(1, timeout)
            .await
            .context("joining the network")?;
        node.wait_synced(timeout).await.context(if books {
            "catching up with the ledger"
        } else {
            "syncing the registry"
        })?;
        Ok(node)
    }
}
