//! Reachability: whether peers can dial this node, and what it does when they cannot.
//!
//! AutoNAT asks connected peers to dial this node back. Until one succeeds (or while none
//! can), the node is a Kademlia client: it does not advertise itself as a DHT server at
//! addresses nobody can reach. A private node keeps a reservation on a relay, a peer it
//! dialed itself that offers circuit relay v2, and listens through it
//! (`<relay>/p2p-circuit`), so that others can reach it; when a peer connects over that
//! circuit, DCUtR tries to punch a hole and replace the relayed connection by a direct one.
//! Outbound connections need none of this: a worker behind a NAT dials the service and its
//! other peers directly.

use std::collections::{BTreeMap, HashMap};

use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, autonat, dcutr, identify, kad, relay};

use super::EventLoop;
use crate::net::behaviour::Reachability;

/// Relay candidates remembered (peers this node dialed that offer a relay).
const MAX_RELAY_CANDIDATES: usize = 64;
/// The relay hop protocol a relay server announces in identify.
const HOP_PROTOCOL: &str = "/libp2p/circuit/relay/0.2.0/hop";

/// What this node knows of its own reachability and its relayed connections.
pub(super) struct Reach {
    /// What the node was told (after the loopback rule: see [`effective`]).
    setting: Reachability,
    /// AutoNAT's latest verdict.
    nat: autonat::NatStatus,
    /// The relay this node listens through, while it is private.
    relayed: Option<RelayListen>,
    /// Peers this node dialed directly that offer a relay, with the address it dialed.
    candidates: BTreeMap<PeerId, Multiaddr>,
    /// Relays whose reservation failed: tried last.
    failed: HashMap<PeerId, u32>,
    /// Open connections that go through a relay.
    relayed_connections: HashMap<ConnectionId, PeerId>,
    /// The address this node dialed each connected peer at (direct connections only).
    dialed: HashMap<PeerId, Multiaddr>,
    /// Kademlia's mode now.
    kad_mode: kad::Mode,
    /// Private peers holding a reservation on this node's relay, and circuits through it.
    reservations: HashMap<PeerId, u32>,
    circuits: usize,
}

struct RelayListen {
    relay: PeerId,
    listener: ListenerId,
    accepted: bool,
}

/// Whether a connection's address goes through a relay.
pub(super) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

impl Reach {
    pub(super) fn new(setting: Reachability, kad_mode: kad::Mode) -> Reach {
        Reach {
            setting,
            dialed: HashMap::new(),
            kad_mode,
            nat: autonat::NatStatus::Unknown,
            relayed: None,
            candidates: BTreeMap::new(),
            failed: HashMap::new(),
            relayed_connections: HashMap::new(),
            reservations: HashMap::new(),
            circuits: 0,
        }
    }

    /// A relay failed this node: it is tried after the others. The tally is forgotten when
    /// it grows past a bound (old failures say little).
    fn note_failure(&mut self, relay: PeerId) {
        if self.failed.len() >= MAX_RELAY_CANDIDATES * 4 {
            self.failed.clear();
        }
        *self.failed.entry(relay).or_default() += 1;
    }

    /// Whether this node should hold a relay reservation now.
    fn wants_relay(&self) -> bool {
        match self.setting {
            Reachability::Private => true,
            Reachability::Public => false,
            Reachability::Auto => matches!(self.nat, autonat::NatStatus::Private),
        }
    }

    /// `public`, `private` or `unknown`, for the stats.
    pub(super) fn status_name(&self) -> &'static str {
        match (self.setting, &self.nat) {
            (Reachability::Public, _) => "public",
            (Reachability::Private, _) => "private",
            (Reachability::Auto, autonat::NatStatus::Public(_)) => "public",
            (Reachability::Auto, autonat::NatStatus::Private) => "private",
            (Reachability::Auto, autonat::NatStatus::Unknown) => "unknown",
        }
    }

    pub(super) fn public_address(&self) -> Option<String> {
        match &self.nat {
            autonat::NatStatus::Public(a) => Some(a.to_string()),
            _ => None,
        }
    }

    pub(super) fn relayed_count(&self) -> usize {
        self.relayed_connections.len()
    }

    pub(super) fn relay_name(&self) -> Option<String> {
        self.relayed
            .as_ref()
            .filter(|r| r.accepted)
            .map(|r| r.relay.to_string())
    }

    pub(super) fn reservations(&self) -> usize {
        self.reservations.values().map(|&n| n as usize).sum()
    }

    pub(super) fn circuits(&self) -> usize {
        self.circuits
    }
}

impl EventLoop {
    /// A connection opened: count relayed ones.
    pub(super) fn reach_connected(&mut self, id: ConnectionId, peer: PeerId, at: &ConnectedPoint) {
        let addr = at.get_remote_address();
        if is_relayed(addr) {
            self.reach.relayed_connections.insert(id, peer);
        } else if let ConnectedPoint::Dialer { address, .. } = at {
            self.reach.dialed.insert(peer, address.clone());
        }
    }

    /// A connection closed; a relay this node listens through may be gone.
    pub(super) fn reach_closed(&mut self, id: ConnectionId, peer: PeerId, remaining: u32) {
        self.reach.relayed_connections.remove(&id);
        if remaining == 0 {
            self.reach.candidates.remove(&peer);
            self.reach.dialed.remove(&peer);
        }
    }

    /// Identify told us what a peer offers: a peer this node dialed straight that runs a relay
    /// is a relay candidate, at the address dialed.
    pub(super) fn reach_identified(&mut self, peer: PeerId, protocols: &[libp2p::StreamProtocol]) {
        if !protocols.iter().any(|p| p.as_ref() == HOP_PROTOCOL) {
            return;
        }
        let dialed = self.reach.dialed.get(&peer).cloned();
        if let Some(addr) = dialed
            && (self.reach.candidates.contains_key(&peer)
                || self.reach.candidates.len() < MAX_RELAY_CANDIDATES)
        {
            self.reach.candidates.insert(peer, addr);
            self.reach_update();
        }
    }

    /// Take a relay reservation when private and none is held; drop it once public.
    pub(super) fn reach_update(&mut self) {
        if !self.reach.wants_relay() {
            if let Some(r) = self.reach.relayed.take() {
                tracing::info!(relay = %r.relay, "reachable: relay reservation dropped");
                self.swarm.remove_listener(r.listener);
            }
            return;
        }
        if self.reach.relayed.is_some() {
            return;
        }
        // Fewest failures first, then peer id order: deterministic, and a bad relay is not
        // retried before the others.
        let mut order: Vec<(&PeerId, &Multiaddr)> = self.reach.candidates.iter().collect();
        order.sort_by_key(|(p, _)| self.reach.failed.get(*p).copied().unwrap_or(0));
        let Some((relay, addr)) = order.first().map(|(p, a)| (**p, (*a).clone())) else {
            tracing::debug!("private, and no relay known yet");
            return;
        };
        let circuit = addr
            .with_p2p(relay)
            .unwrap_or_else(|a| a)
            .with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(listener) => {
                tracing::info!(%relay, addr = %circuit, "private: asking for a relay reservation");
                self.reach.relayed = Some(RelayListen {
                    relay,
                    listener,
                    accepted: false,
                });
            }
            Err(e) => {
                tracing::warn!(%relay, "cannot listen through relay: {e}");
                self.reach.note_failure(relay);
            }
        }
    }

    /// A listener closed: if it was the relay's, find another.
    pub(super) fn reach_listener_closed(&mut self, listener: ListenerId) {
        if let Some(r) = &self.reach.relayed
            && r.listener == listener
        {
            let relay = r.relay;
            tracing::info!(%relay, "relay reservation lost");
            self.reach.relayed = None;
            self.reach.note_failure(relay);
            self.reach.candidates.remove(&relay);
            self.reach_update();
        }
    }

    pub(super) fn on_kad_mode(&mut self, mode: kad::Mode) {
        tracing::info!(%mode, "DHT mode changed");
        self.reach.kad_mode = mode;
    }

    pub(super) fn on_autonat_event(&mut self, ev: autonat::Event) {
        if let autonat::Event::StatusChanged { old, new } = ev {
            tracing::info!(?old, ?new, "reachability changed");
            self.reach.nat = new;
            if self.reach.setting == Reachability::Auto && !self.light {
                let mode = match self.reach.nat {
                    autonat::NatStatus::Public(_) => kad::Mode::Server,
                    _ => kad::Mode::Client,
                };
                self.swarm.behaviour_mut().kad.set_mode(Some(mode));
                // kad reports only the changes of its automatic mode.
                self.on_kad_mode(self.swarm.behaviour().kad.mode());
            }
            self.reach_update();
        }
    }

    pub(super) fn on_relay_client_event(&mut self, ev: relay::client::Event) {
        match ev {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                if let Some(r) = &mut self.reach.relayed
                    && r.relay == relay_peer_id
                {
                    r.accepted = true;
                }
                if !renewal {
                    tracing::info!(relay = %relay_peer_id, "reachable through a relay");
                }
                self.reach.failed.remove(&relay_peer_id);
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                tracing::debug!(relay = %relay_peer_id, "circuit out through a relay");
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                tracing::debug!(peer = %src_peer_id, "circuit in through our relay");
            }
        }
    }

    pub(super) fn on_relay_server_event(&mut self, ev: relay::Event) {
        match ev {
            relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
                let n = self.reach.reservations.entry(src_peer_id).or_default();
                *n = (*n).max(1);
            }
            relay::Event::ReservationTimedOut { src_peer_id } => {
                self.reach.reservations.remove(&src_peer_id);
            }
            relay::Event::ReservationClosed { src_peer_id } => {
                self.reach.reservations.remove(&src_peer_id);
            }
            relay::Event::CircuitReqAccepted { .. } => self.reach.circuits += 1,
            relay::Event::CircuitClosed { .. } => {
                self.reach.circuits = self.reach.circuits.saturating_sub(1)
            }
            other => tracing::debug!("relay: {other:?}"),
        }
    }

    pub(super) fn on_dcutr_event(&mut self, ev: dcutr::Event) {
        match ev.result {
            Ok(_) => {
                tracing::info!(peer = %ev.remote_peer_id, "hole punched: direct connection");
                self.stats().hole_punches += 1;
            }
            Err(e) => {
                tracing::debug!(peer = %ev.remote_peer_id, "hole punching failed: {e}");
                self.stats().hole_punch_failures += 1;
            }
        }
    }

    /// The reachability figures for the stats.
    pub(super) fn reach_stats(&mut self, connections: usize) {
        let mode = match self.reach.kad_mode {
            kad::Mode::Server => "server",
            kad::Mode::Client => "client",
        }
        .to_string();
        let (status, public, relayed, relay, reservations, circuits) = (
            self.reach.status_name().to_string(),
            self.reach.public_address(),
            self.reach.relayed_count(),
            self.reach.relay_name(),
            self.reach.reservations(),
            self.reach.circuits(),
        );
        let mut s = self.stats();
        s.reachability = status;
        s.public_address = public;
        s.kad_mode = mode;
        s.connections_relayed = relayed;
        s.connections_direct = connections.saturating_sub(relayed);
        s.relay = relay;
        s.relay_reservations = reservations;
        s.relay_circuits = circuits;
    }
}

impl EventLoop {
    /// A peer told us who it is: a connection to one of another network (another protocol
    /// version, i.e. another genesis) is closed and its addresses never enter the DHT; ours
    /// feed the DHT if discovery is on. Only that connection closes: a key reused on two
    /// networks is one peer id on both, and its connection on ours stays.
    pub(super) fn on_identified(
        &mut self,
        peer_id: PeerId,
        connection: libp2p::swarm::ConnectionId,
        info: identify::Info,
    ) {
        let ours = self.genesis.identify_version();
        if info.protocol_version != ours {
            tracing::info!(
                peer = %peer_id,
                theirs = %info.protocol_version,
                %ours,
                "peer of another network disconnected"
            );
            self.stats().peers_wrong_network += 1;
            self.swarm.close_connection(connection);
            return;
        }
        self.reach_identified(peer_id, &info.protocols);
        // Only DHT servers go in the routing table: a peer in client mode (private, or light)
        // would be asked for records it does not serve, at addresses nobody may reach.
        if self.discovery && info.protocols.contains(&self.kad_protocol) {
            for addr in info.listen_addrs {
                self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("test address")
    }

    #[test]
    fn relayed_addresses_are_told_apart() {
        assert!(is_relayed(&addr(
            "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
        )));
        assert!(!is_relayed(&addr("/ip4/10.0.0.1/udp/4001/quic-v1")));
    }

    #[test]
    fn status_follows_setting_then_autonat() {
        let mut r = Reach::new(Reachability::Auto, kad::Mode::Client);
        assert_eq!(r.status_name(), "unknown");
        assert!(!r.wants_relay());
        r.nat = autonat::NatStatus::Private;
        assert_eq!(r.status_name(), "private");
        assert!(r.wants_relay());
        r.nat = autonat::NatStatus::Public(addr("/ip4/10.0.0.1/tcp/4001"));
        assert_eq!(r.status_name(), "public");
        assert!(!r.wants_relay());
        let forced = Reach::new(Reachability::Private, kad::Mode::Client);
        assert!(forced.wants_relay());
        assert_eq!(forced.status_name(), "private");
    }
}
