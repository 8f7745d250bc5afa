//! Limits on connections: how many in total, per peer, pending, per remote IP, and none at
//! all while the process uses too much memory.
//!
//! The totals, per peer and pending are libp2p's `connection_limits`, the memory bound its
//! `memory_connection_limits`; the per-IP bound is [`IpLimits`], a behaviour of our own that
//! refuses an inbound connection from an address already holding its share. Loopback is
//! exempt from the per-IP bound: tests and the local testnet run every node on 127.0.0.1.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{PeerId, connection_limits, memory_connection_limits};

/// Connection limits, in [`super::NetTuning::limits`].
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionCaps {
    /// Established connections in total (inbound and outbound).
    pub max_established: u32,
    /// Established connections with one peer.
    pub max_per_peer: u32,
    /// Inbound connections still in their handshake.
    pub max_pending_incoming: u32,
    /// Outbound dials in progress.
    pub max_pending_outgoing: u32,
    /// Inbound connections from one remote IP (loopback exempt).
    pub max_per_ip: u32,
    /// Refuse new connections while the process's resident memory is over this fraction of
    /// the machine's (checked by libp2p at most every 100 ms).
    pub max_memory_fraction: f64,
}

impl Default for ConnectionCaps {
    fn default() -> Self {
        ConnectionCaps {
            // The testnet's 50 processes connect to one bootstrap and, by discovery, to each
            // other: well within these.
            max_established: 512,
            max_per_peer: 4,
            max_pending_incoming: 128,
            max_pending_outgoing: 128,
            max_per_ip: 16,
            max_memory_fraction: 0.8,
        }
    }
}

impl ConnectionCaps {
    /// libp2p's totals, per peer and pending.
    pub(crate) fn counts(&self) -> connection_limits::Behaviour {
        connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(self.max_established))
                .with_max_established_per_peer(Some(self.max_per_peer))
                .with_max_pending_incoming(Some(self.max_pending_incoming))
                .with_max_pending_outgoing(Some(self.max_pending_outgoing)),
        )
    }

    /// libp2p's memory bound.
    pub(crate) fn memory(&self) -> memory_connection_limits::Behaviour {
        memory_connection_limits::Behaviour::with_max_percentage(
            self.max_memory_fraction.clamp(0.01, 1.0),
        )
    }
}

/// Why [`IpLimits`] refused a connection.
#[derive(Debug, thiserror::Error)]
#[error("{ip} already holds {limit} inbound connections")]
pub(crate) struct TooManyFromIp {
    ip: IpAddr,
    limit: u32,
}

/// Inbound connections per remote IP, refused past `max_per_ip`.
pub(crate) struct IpLimits {
    max_per_ip: u32,
    per_ip: HashMap<IpAddr, u32>,
    /// Established inbound connections counted, to uncount them when they close.
    counted: HashMap<ConnectionId, IpAddr>,
}

impl IpLimits {
    pub(crate) fn new(max_per_ip: u32) -> IpLimits {
        IpLimits {
            max_per_ip: max_per_ip.max(1),
            per_ip: HashMap::new(),
            counted: HashMap::new(),
        }
    }

    /// The remote IP that counts, if any (loopback does not).
    fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
        let ip = addr.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
            libp2p::multiaddr::Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        })?;
        (!ip.is_loopback()).then_some(ip)
    }

    fn check(&self, remote: &Multiaddr) -> Result<Option<IpAddr>, ConnectionDenied> {
        let Some(ip) = Self::ip_of(remote) else {
            return Ok(None);
        };
        let held = self.per_ip.get(&ip).copied().unwrap_or(0);
        if held >= self.max_per_ip {
            return Err(ConnectionDenied::new(TooManyFromIp {
                ip,
                limit: self.max_per_ip,
            }));
        }
        Ok(Some(ip))
    }
}

impl NetworkBehaviour for IpLimits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.check(remote).map(|_| ())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if let Some(ip) = self.check(remote)? {
            *self.per_ip.entry(ip).or_default() += 1;
            self.counted.insert(id, ip);
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::ConnectionClosed(c) = event
            && let Some(ip) = self.counted.remove(&c.connection_id)
            && let Some(n) = self.per_ip.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn inbound_connections_per_ip_are_bounded_and_loopback_is_exempt() {
        let mut l = IpLimits::new(2);
        let far = addr("/ip4/203.0.113.7/tcp/4001");
        let peer = PeerId::random();
        for i in 0..2 {
            let id = ConnectionId::new_unchecked(i);
            assert!(l.handle_pending_inbound_connection(id, &far, &far).is_ok());
            assert!(
                l.handle_established_inbound_connection(id, peer, &far, &far)
                    .is_ok()
            );
        }
        let third = ConnectionId::new_unchecked(2);
        assert!(
            l.handle_pending_inbound_connection(third, &far, &far)
                .is_err()
        );
        // Another address, and loopback, are not affected.
        let other = addr("/ip4/203.0.113.8/tcp/4001");
        assert!(
            l.handle_pending_inbound_connection(third, &other, &other)
                .is_ok()
        );
        let lo = addr("/ip4/127.0.0.1/tcp/4001");
        for i in 10..100 {
            let id = ConnectionId::new_unchecked(i);
            assert!(
                l.handle_established_inbound_connection(id, peer, &lo, &lo)
                    .is_ok()
            );
        }
        assert_eq!(l.counted.len(), 2, "loopback is not counted");
    }
}
