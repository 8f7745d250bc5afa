//! What one browser connection may cost the node: messages and bytes per second, how many
//! refused messages before it is cut off, and for how long its key is refused after that.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use dpow_keys::PublicKey;

/// Keys refused at once, at most (the oldest refusal is forgotten first).
const MAX_REFUSED_KEYS: usize = 4096;

/// The limits of one browser connection.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Messages per second, sustained (twice that in a burst).
    pub messages_per_second: u32,
    /// Bytes per second, sustained (twice that in a burst).
    pub bytes_per_second: u32,
    /// The largest message accepted; a larger one closes the socket.
    pub max_message_bytes: usize,
    /// Refused messages (invalid, malformed, over the rate) before the socket is closed and
    /// the connection's key refused.
    pub max_strikes: u32,
    /// How long a cut-off key is refused on every connection.
    pub refuse_for: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            messages_per_second: 20,
            bytes_per_second: 16 * 1024,
            max_message_bytes: 2048,
            max_strikes: 5,
            refuse_for: Duration::from_secs(600),
        }
    }
}

/// A token bucket over messages and bytes for one connection.
pub(crate) struct Meter {
    messages: f64,
    bytes: f64,
    at: Instant,
}

impl Meter {
    pub(crate) fn new(b: &Budget, now: Instant) -> Meter {
        Meter {
            messages: f64::from(b.messages_per_second) * 2.0,
            bytes: f64::from(b.bytes_per_second) * 2.0,
            at: now,
        }
    }

    /// Take one message of `len` bytes; false if the connection is over its budget.
    pub(crate) fn take(&mut self, b: &Budget, len: usize, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        let (mps, bps) = (
            f64::from(b.messages_per_second),
            f64::from(b.bytes_per_second),
        );
        self.messages = (self.messages + dt * mps).min(2.0 * mps);
        self.bytes = (self.bytes + dt * bps).min(2.0 * bps);
        if self.messages < 1.0 || self.bytes < len as f64 {
            return false;
        }
        self.messages -= 1.0;
        self.bytes -= len as f64;
        true
    }
}

/// Browser keys cut off for misbehaving, until a deadline.
#[derive(Default)]
pub struct RefusedKeys {
    until: HashMap<PublicKey, Instant>,
    order: VecDeque<PublicKey>,
}

impl RefusedKeys {
    /// Refuse `key` until `until`.
    pub fn refuse(&mut self, key: PublicKey, until: Instant) {
        if self.until.insert(key, until).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > MAX_REFUSED_KEYS {
            if let Some(old) = self.order.pop_front() {
                self.until.remove(&old);
            }
        }
    }

    /// Whether `key` is refused at `now`.
    pub fn is_refused(&self, key: &PublicKey, now: Instant) -> bool {
        self.until.get(key).is_some_and(|t| *t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_allows_a_burst_then_the_sustained_rate() {
        let b = Budget {
            messages_per_second: 10,
            bytes_per_second: 1000,
            ..Budget::default()
        };
        let t0 = Instant::now();
        let mut m = Meter::new(&b, t0);
        let burst = (0..100).take_while(|_| m.take(&b, 10, t0)).count();
        assert_eq!(burst, 20);
        // Half a second later, five more.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..100).take_while(|_| m.take(&b, 10, t1)).count(), 5);
        // Bytes count too: one message larger than the bytes left is refused.
        let t2 = t1 + Duration::from_secs(10);
        assert!(!m.take(&b, 2001, t2));
        assert!(m.take(&b, 1500, t2));
    }

    #[test]
    fn refused_keys_expire_and_stay_bounded() {
        let t0 = Instant::now();
        let mut r = RefusedKeys::default();
        let k = dpow_keys::SecretKey::generate().expect("key").public();
        r.refuse(k, t0 + Duration::from_secs(5));
        assert!(r.is_refused(&k, t0));
        assert!(!r.is_refused(&k, t0 + Duration::from_secs(6)));
        for _ in 0..MAX_REFUSED_KEYS + 10 {
            let other = dpow_keys::SecretKey::generate().expect("key").public();
            r.refuse(other, t0 + Duration::from_secs(5));
        }
        assert_eq!(r.until.len(), MAX_REFUSED_KEYS);
        assert!(!r.is_refused(&k, t0), "the oldest refusal was forgotten");
    }
}
