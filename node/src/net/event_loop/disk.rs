//! The event loop's side of the store task ([`crate::store::writer`]): it hands writes over
//! and acts on their completion, never waiting on a disk itself.
//!
//! Writes wait in a backlog when the task's queue is full, so nothing is dropped and order
//! is kept. Receipts are acknowledged (forwarded, published, put into the DHT) only when the
//! task reports them durable; past [`MAX_UNWRITTEN`] receipts not yet on disk, new ones are
//! refused as [`RejectReason::Busy`] (peers offer them again at the next catch-up), so a slow
//! or full disk costs memory up to that bound and no more. A failing write is reported
//! (log, `store_failing` statistic) each time the task retries it.

use std::time::Duration;

use dpow_protocol::validate::{RejectReason, Rejected};

use super::EventLoop;
use super::books::Ack;
use crate::store::writer::{Done, Job, Write};

/// Receipts taken into the ledger but not yet durable, at most.
pub(super) const MAX_UNWRITTEN: usize = 65_536;
/// How long a stopping node waits for its writes to reach the disk.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

impl EventLoop {
    /// Hand a write to the store task; `acks` run, in order, once it is durable (one per
    /// receipt of a `Write::Receipts`).
    pub(super) fn store_write(&mut self, write: Write, acks: Vec<Ack>) {
        if self.writer.is_none() {
            return;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.unwritten.insert(ticket, acks);
        self.backlog.push_back(Job { ticket, write });
        self.pump_store();
    }

    /// Move backlog jobs into the task's queue while it has room.
    pub(super) fn pump_store(&mut self) {
        let Some(w) = &self.writer else { return };
        while let Some(job) = self.backlog.pop_front() {
            if let Err(job) = w.try_submit(job) {
                self.backlog.push_front(job);
                break;
            }
        }
    }

    /// A receipt written after a spell of refusals: say so once.
    pub(super) fn disk_takes_again(&mut self) {
        if let Some((since, refused)) = self.disk_refusing.take() {
            tracing::info!(
                refused,
                "the store writes again after {:.1} s of refusals; refused receipts come back by catch-up",
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// Whether a receipt may be taken in now: refused while too many wait for the disk.
    pub(super) fn check_room(&self) -> Result<(), Rejected> {
        if self.unwritten_receipts >= MAX_UNWRITTEN {
            return Err(Rejected::new(
                RejectReason::Busy,
                "the disk is behind: receipt refused for now",
            ));
        }
        Ok(())
    }

    /// The store task reported.
    pub(super) fn on_store_done(&mut self, done: Done) {
        match done {
            Done::Written(job) => {
                let acks = self.unwritten.remove(&job.ticket).unwrap_or_default();
                if let Write::Receipts { put, .. } = job.write {
                    self.unwritten_receipts = self.unwritten_receipts.saturating_sub(put.len());
                    for (stored, ack) in put.into_iter().zip(acks) {
                        self.acknowledge(stored, ack);
                    }
                }
            }
            Done::Failing {
                ticket,
                what,
                attempts,
                error,
            } => {
                tracing::error!(
                    ticket,
                    what,
                    attempts,
                    "a write to the store failed; retrying: {error}"
                );
                self.stats().reject("store_failing");
            }
        }
        self.pump_store();
    }

    /// Before stopping: hand over what is queued and wait (bounded) until it is on disk.
    pub(super) async fn drain_store(&mut self) {
        self.flush_receipts();
        let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
        while !self.unwritten.is_empty() {
            self.pump_store();
            let Some(rx) = &mut self.store_done else {
                return;
            };
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(done)) => self.on_store_done(done),
                Ok(None) => return,
                Err(_) => {
                    tracing::error!(
                        writes = self.unwritten.len(),
                        "stopping with writes not yet on disk (never acknowledged)"
                    );
                    return;
                }
            }
        }
    }
}

/// The next report of the store task, or never when there is none.
pub(super) async fn next_done(rx: &mut Option<tokio::sync::mpsc::Receiver<Done>>) -> Option<Done> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}
