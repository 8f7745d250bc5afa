//! Graduated anti-spam: how much a service asked for lately, and the priority class that earns.
//!
//! A service's **volume** is the cost of what it requested, in credits ([`Credits::price`]:
//! expected hashes in units of the epoch-2 receive threshold, at least 1 a request), summed
//! over rolling windows (a minute and an hour by default). In each window its class is
//! 0 below the window's base, then one more for every order of magnitude above it:
//!
//! | volume in the window | class |
//! |---|---|
//! | below base | 0 |
//! | base ..< 10 × base | 1 |
//! | 10 × base ..< 100 × base | 2 |
//! | … | up to `max_class` |
//!
//! Its class is the highest over the windows. Workers serve a lower class first (each class a
//! step lower in priority, never refused); relays forward at most a service's **budget**,
//! `base × 10^max_class` per window, and leave the rest unforwarded. Every threshold is in the
//! network's genesis file, so every node classes alike.
//!
//! Memory is fixed per service: each window is kept as [`BUCKETS`] counters, so the window
//! slides in steps of a twelfth of its length. At most [`MAX_METERED`] services are metered;
//! the one heard from longest ago is forgotten first.

use std::collections::HashMap;

use dpow_keys::PublicKey;
use serde::{Deserialize, Serialize};

use crate::{Credits, Difficulty};

/// Counters per window.
pub const BUCKETS: usize = 12;
/// Most services metered at once.
pub const MAX_METERED: usize = 10_000;

/// One rolling window and its base volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Its length, in milliseconds (at least [`BUCKETS`]).
    pub window_ms: u64,
    /// Credits in the window from which a service is in class 1 (at least 1).
    pub base: u64,
}

/// The classes and budgets of a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumePolicy {
    /// The windows (at most 4).
    pub windows: Vec<Window>,
    /// The highest class; the budget per window is `base × 10^max_class`.
    pub max_class: u8,
}

impl Default for VolumePolicy {
    /// 4,800 credits a minute (4,800 receive-difficulty requests, or 75 at send difficulty,
    /// which is 64 times the work) and 96,000 an hour, two classes above the base: relays
    /// forward at most 100 times the base in each window.
    fn default() -> Self {
        VolumePolicy {
            windows: vec![
                Window {
                    window_ms: 60_000,
                    base: 4_800,
                },
                Window {
                    window_ms: 3_600_000,
                    base: 96_000,
                },
            ],
            max_class: 2,
        }
    }
}

impl VolumePolicy {
    /// Whether the policy is usable: 1 to 4 windows, each at least [`BUCKETS`] ms long with a
    /// base of at least 1, and a highest class of at most 12.
    pub fn check(&self) -> Result<(), String> {
        if self.windows.is_empty() || self.windows.len() > 4 {
            return Err(format!(
                "anti-spam needs 1 to 4 windows, got {}",
                self.windows.len()
            ));
        }
        for w in &self.windows {
            if w.window_ms < BUCKETS as u64 || w.base == 0 {
                return Err(format!(
                    "an anti-spam window must last at least {BUCKETS} ms and have a base of at least 1 (got {} ms, base {})",
                    w.window_ms, w.base
                ));
            }
        }
        if self.max_class > 12 {
            return Err(format!(
                "the highest anti-spam class is at most 12, got {}",
                self.max_class
            ));
        }
        Ok(())
    }

    /// The class of `volume` credits in a window whose base is `base`.
    pub fn class_in(&self, base: u64, volume: u128) -> u8 {
        let base = u128::from(base.max(1));
        let mut class = 0u8;
        let mut threshold = base;
        while volume >= threshold && class < self.max_class {
            class += 1;
            threshold = threshold.saturating_mul(10);
        }
        class
    }

    /// The most credits a relay forwards from one service in a window of base `base`.
    pub fn budget(&self, base: u64) -> u128 {
        (0..self.max_class).fold(u128::from(base.max(1)), |b, _| b.saturating_mul(10))
    }
}

/// One service's counters: per window, `BUCKETS` (bucket index, credits).
#[derive(Clone, Debug)]
struct Counters {
    windows: Vec<[(u64, u128); BUCKETS]>,
    last_ms: u64,
}

/// What a meter says of a request it counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metered {
    /// The service's class, this request included.
    pub class: u8,
    /// Whether this request takes the service past its budget in some window.
    pub over_budget: bool,
}

/// Rolling volume per service. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct VolumeMeter {
    policy: VolumePolicy,
    services: HashMap<PublicKey, Counters>,
}

impl VolumeMeter {
    /// A meter applying `policy`.
    pub fn new(policy: VolumePolicy) -> Self {
        VolumeMeter {
            policy,
            services: HashMap::new(),
        }
    }

    /// The policy applied.
    pub fn policy(&self) -> &VolumePolicy {
        &self.policy
    }

    /// Count a request of `difficulty` from `service` at `now_ms`; its class and whether it
    /// passes the budget.
    pub fn count(&mut self, service: PublicKey, difficulty: Difficulty, now_ms: u64) -> Metered {
        let credits = u128::from(Credits::price(difficulty).0);
        if !self.services.contains_key(&service)
            && self.services.len() >= MAX_METERED
            && let Some(old) = self
                .services
                .iter()
                .min_by_key(|(k, c)| (c.last_ms, **k))
                .map(|(k, _)| *k)
        {
            self.services.remove(&old);
        }
        let n = self.policy.windows.len();
        let c = self.services.entry(service).or_insert_with(|| Counters {
            windows: vec![[(u64::MAX, 0); BUCKETS]; n],
            last_ms: now_ms,
        });
        c.last_ms = c.last_ms.max(now_ms);
        let mut out = Metered {
            class: 0,
            over_budget: false,
        };
        for (w, buckets) in self.policy.windows.iter().zip(&mut c.windows) {
            let step = (w.window_ms / BUCKETS as u64).max(1);
            let index = now_ms / step;
            let slot = &mut buckets[(index % BUCKETS as u64) as usize];
            if slot.0 != index {
                *slot = (index, 0);
            }
            slot.1 = slot.1.saturating_add(credits);
            let volume = window_volume(buckets, index);
            out.class = out.class.max(self.policy.class_in(w.base, volume));
            out.over_budget |= volume > self.policy.budget(w.base);
        }
        out
    }

    /// What [`VolumeMeter::count`] would answer for the same request, without counting it:
    /// for a check made before the request is known to be genuine (a forged copy must not
    /// spend its service's budget).
    pub fn peek(&self, service: &PublicKey, difficulty: Difficulty, now_ms: u64) -> Metered {
        let credits = u128::from(Credits::price(difficulty).0);
        let mut out = Metered {
            class: 0,
            over_budget: false,
        };
        let counters = self.services.get(service);
        for (n, w) in self.policy.windows.iter().enumerate() {
            let step = (w.window_ms / BUCKETS as u64).max(1);
            let held = counters
                .and_then(|c| c.windows.get(n))
                .map_or(0, |b| window_volume(b, now_ms / step));
            let volume = held.saturating_add(credits);
            out.class = out.class.max(self.policy.class_in(w.base, volume));
            out.over_budget |= volume > self.policy.budget(w.base);
        }
        out
    }

    /// Services metered.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether no service is metered.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// The credits in a window's buckets of the last `BUCKETS` steps up to step `index`, that
/// one included (a slot still holding an older step counts nothing).
fn window_volume(buckets: &[(u64, u128); BUCKETS], index: u64) -> u128 {
    buckets
        .iter()
        .filter(|(i, _)| *i != u64::MAX && *i <= index && index - *i < BUCKETS as u64)
        .map(|(_, v)| *v)
        .fold(0, u128::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Price 1 (easy work).
    const EASY: Difficulty = Difficulty(0xff00_0000_0000_0000);

    fn policy(base: u64, max_class: u8) -> VolumePolicy {
        VolumePolicy {
            windows: vec![Window {
                window_ms: 1_200,
                base,
            }],
            max_class,
        }
    }

    #[test]
    fn classes_step_by_orders_of_magnitude() {
        let p = policy(10, 3);
        let classes: Vec<u8> = [0u128, 9, 10, 99, 100, 999, 1000, 1_000_000]
            .iter()
            .map(|v| p.class_in(10, *v))
            .collect();
        assert_eq!(classes, vec![0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(p.budget(10), 10_000);
        assert_eq!(policy(7, 1).budget(7), 70);
        assert_eq!(
            policy(1, 12).budget(u64::MAX),
            u128::from(u64::MAX) * 10u128.pow(12)
        );
    }

    #[test]
    fn a_meter_counts_credits_and_forgets_what_left_the_window() {
        let mut m = VolumeMeter::new(policy(10, 2));
        let s = PublicKey([1; 32]);
        let mut last = Metered {
            class: 0,
            over_budget: false,
        };
        for i in 0..10 {
            last = m.count(s, EASY, 5_000 + i);
            assert_eq!(last.class, u8::from(i == 9), "request {i}");
        }
        // A send-difficulty request costs 64 credits: 74 in the window.
        let send = Difficulty::EPOCH2_SEND;
        assert_eq!(Credits::price(send).0, 64);
        assert_eq!(m.count(s, send, 5_050).class, 1);
        for i in 0..26 {
            last = m.count(s, EASY, 5_060 + i);
        }
        assert_eq!(
            last,
            Metered {
                class: 2,
                over_budget: false
            }
        );
        // The budget is base × 10^2 = 1,000 credits: the 1,001st passes it.
        for i in 0..900 {
            last = m.count(s, EASY, 5_100 + i % 50);
        }
        assert_eq!(
            last,
            Metered {
                class: 2,
                over_budget: false
            }
        );
        assert!(m.count(s, EASY, 5_150).over_budget);
        // A window (12 steps of 100 ms) later it has all left.
        assert_eq!(
            m.count(s, EASY, 6_300),
            Metered {
                class: 0,
                over_budget: false
            }
        );
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn a_peek_answers_what_counting_would_and_counts_nothing() {
        let mut m = VolumeMeter::new(policy(10, 2));
        let s = PublicKey([2; 32]);
        let send = Difficulty::EPOCH2_SEND;
        let mut t = 1_000u64;
        for i in 0u64..400 {
            // Steps of 0 to 170 ms: some requests share a bucket, some skip whole windows.
            t += (i * 37) % 171;
            let d = if i % 7 == 0 { send } else { EASY };
            let first = m.peek(&s, d, t);
            assert_eq!(m.peek(&s, d, t), first, "a peek changed the meter");
            assert_eq!(m.count(s, d, t), first, "request {i} at {t}");
        }
        assert_eq!(m.len(), 1);
        let stranger = PublicKey([3; 32]);
        assert!(!m.peek(&stranger, EASY, t).over_budget);
        assert_eq!(m.len(), 1, "a peek metered a new service");
    }

    #[test]
    fn the_highest_window_class_counts_and_policies_are_checked() {
        let p = VolumePolicy {
            windows: vec![
                Window {
                    window_ms: 1_200,
                    base: 100,
                },
                Window {
                    window_ms: 120_000,
                    base: 5,
                },
            ],
            max_class: 4,
        };
        assert!(p.check().is_ok());
        let mut m = VolumeMeter::new(p);
        let s = PublicKey([2; 32]);
        // 60 requests, one every 2 s: never more than one in the short window, 60 in the
        // long one (base 5: class 2).
        let mut last = 0;
        for i in 0..60u64 {
            last = m.count(s, EASY, i * 2_000).class;
        }
        assert_eq!(last, 2);
        assert!(
            VolumePolicy {
                windows: vec![],
                max_class: 1
            }
            .check()
            .is_err()
        );
        assert!(policy(0, 1).check().is_err());
        assert!(policy(1, 13).check().is_err());
    }

    #[test]
    fn the_meter_is_bounded() {
        let mut m = VolumeMeter::new(policy(10, 2));
        for i in 0..(MAX_METERED as u64 + 50) {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&i.to_le_bytes());
            m.count(PublicKey(k), EASY, i);
        }
        assert_eq!(m.len(), MAX_METERED);
    }
}
