//! How long the event loop's turns take, and what woke it for each.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use libp2p::swarm::SwarmEvent;

use crate::net::behaviour::{BehaviourEvent, SyncRequest, SyncResponse};
use crate::net::stats::Percentiles;

/// Turns whose time the statistics keep.
pub(super) const TURNS_KEPT: usize = 4096;

/// The event loop's turn times: the last [`TURNS_KEPT`] (µs) and the longest since start.
#[derive(Default)]
pub(super) struct TurnTimes {
    /// Microseconds, and what woke the loop.
    last: VecDeque<(u32, &'static str)>,
    pub(super) max_us: u64,
    pub(super) max_kind: &'static str,
}

impl TurnTimes {
    pub(super) fn record(&mut self, took: Duration, kind: &'static str) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if us > self.max_us {
            self.max_us = us;
            self.max_kind = kind;
        }
        if self.last.len() == TURNS_KEPT {
            self.last.pop_front();
        }
        self.last
            .push_back((u32::try_from(us).unwrap_or(u32::MAX), kind));
    }

    /// Percentiles in milliseconds over the turns kept, and what woke the loop for the
    /// slowest 1% of them.
    pub(super) fn percentiles(&self) -> (Percentiles, BTreeMap<String, u64>) {
        let ms: Vec<f64> = self
            .last
            .iter()
            .map(|(us, _)| f64::from(*us) / 1e3)
            .collect();
        let mut by_time: Vec<&(u32, &'static str)> = self.last.iter().collect();
        by_time.sort_unstable_by_key(|t| std::cmp::Reverse(t.0));
        let mut slow = BTreeMap::new();
        for (_, kind) in by_time.into_iter().take(self.last.len().div_ceil(100)) {
            *slow.entry((*kind).to_string()).or_insert(0) += 1;
        }
        (Percentiles::of(&ms), slow)
    }
}

/// What a swarm event is, for the turn statistics.
pub(super) fn swarm_kind(event: &SwarmEvent<BehaviourEvent>) -> &'static str {
    use libp2p::request_response::{Event as Rr, Message};
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Sync(Rr::Message { message, .. })) => match message {
            Message::Request { request, .. } => match request {
                SyncRequest::Hello { .. } => "sync request: hello",
                SyncRequest::Digests => "sync request: digests",
                SyncRequest::Ids { .. } => "sync request: ids",
                SyncRequest::Fetch { .. } => "sync request: fetch",
                SyncRequest::Checkpoints { .. } => "sync request: checkpoints",
            },
            Message::Response { response, .. } => match response {
                SyncResponse::Hello { .. } => "sync answer: hello",
                SyncResponse::Digests { .. } => "sync answer: digests",
                SyncResponse::Ids { .. } => "sync answer: ids",
                SyncResponse::Receipts(_) => "sync answer: receipts",
                SyncResponse::Checkpoints(_) => "sync answer: checkpoints",
                SyncResponse::Busy { .. } => "sync answer: busy",
            },
        },
        SwarmEvent::Behaviour(BehaviourEvent::Sync(_)) => "sync: other",
        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(libp2p::gossipsub::Event::Message {
            ..
        })) => "gossip message",
        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(_)) => "gossip: other",
        SwarmEvent::Behaviour(BehaviourEvent::Results(_)) => "result delivery",
        SwarmEvent::Behaviour(BehaviourEvent::Kad(_)) => "kademlia",
        SwarmEvent::Behaviour(_) => "swarm: other behaviour",
        SwarmEvent::ConnectionEstablished { .. } | SwarmEvent::ConnectionClosed { .. } => {
            "connection"
        }
        _ => "swarm: other",
    }
}

#[cfg(test)]
mod turn_tests {
    use super::*;

    #[test]
    fn the_slow_turns_are_counted_by_what_woke_the_loop_and_the_longest_is_named() {
        let mut t = TurnTimes::default();
        for i in 0..TURNS_KEPT + 100 {
            t.record(Duration::from_micros(10 + (i % 7) as u64), "gossip message");
        }
        // The slowest 1% of the window is 41 turns: these 21 and 20 of the others.
        for _ in 0..20 {
            t.record(Duration::from_millis(30), "sync request: ids");
        }
        t.record(Duration::from_millis(300), "sync request: digests");
        let (p, slow) = t.percentiles();
        assert_eq!(p.samples, TURNS_KEPT);
        assert_eq!(slow.get("sync request: ids"), Some(&20));
        assert_eq!(slow.get("sync request: digests"), Some(&1));
        assert_eq!(slow.get("gossip message"), Some(&20));
        assert_eq!(slow.values().sum::<u64>(), 41);
        assert_eq!(t.max_kind, "sync request: digests");
        assert_eq!(t.max_us, 300_000);
    }
}
