//! The store task: every write the event loop makes goes through one thread that owns the
//! writes, so the event loop never waits on a synced disk write.
//!
//! The event loop hands a [`Job`] over a bounded queue with [`Writer::try_submit`] (a full
//! queue hands the job back: the caller keeps it and tries again, and refuses new work past
//! its own bound). The thread writes jobs in order and reports each one on a second bounded
//! channel: [`Done::Written`] once it is durable (receipts, registry entries and checkpoints
//! are synced to the write-ahead log before that), or [`Done::Failing`] each time a write
//! fails. A failed write is never dropped: the thread retries it, with a backoff from 50 ms
//! to 5 s, until it succeeds or the node stops, and the jobs behind it wait, so writes stay in
//! order. Only after `Written` does the event loop acknowledge what the job carried.
//!
//! Kademlia writes nothing here: its records are the ledger's receipts
//! ([`crate::net::records`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Store, StoreError, StoredReceipt};

/// Jobs queued for the thread at most.
pub const QUEUE: usize = 64;
/// The first retry's delay; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest delay between two tries of one write.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Receipts the books already hold, written without a sync on the event loop
    /// ([`super::Books::ingest`]): make them durable (sync the write-ahead log, which holds
    /// every write before this one too).
    Receipts {
        /// The receipts, handed back for their acknowledgements.
        put: Vec<StoredReceipt>,
    },
    /// A registry entry, synced.
    Registry {
        /// The registrar's key.
        registrar: [u8; 32],
        /// Its sequence number.
        seq: u64,
        /// The entry's envelope.
        bytes: Vec<u8>,
    },
    /// A registrar's checkpoint, synced.
    Checkpoint {
        /// Its epoch.
        epoch: u64,
        /// The registrar's key.
        registrar: [u8; 32],
        /// The checkpoint's envelope.
        bytes: Vec<u8>,
    },
}

impl Write {
    /// A short name for logs and statistics.
    pub fn what(&self) -> &'static str {
        match self {
            Write::Receipts { .. } => "receipts",
            Write::Registry { .. } => "registry",
            Write::Checkpoint { .. } => "checkpoint",
        }
    }
}

/// A write with the caller's ticket, which comes back in [`Done`].
#[derive(Debug)]
pub struct Job {
    /// The caller's number for this job.
    pub ticket: u64,
    /// What to write.
    pub write: Write,
}

/// What the thread reports.
#[derive(Debug)]
pub enum Done {
    /// The job is durable; its write is handed back.
    Written(Job),
    /// A try failed; the thread tries again after a backoff.
    Failing {
        /// The job's ticket.
        ticket: u64,
        /// What it writes.
        what: &'static str,
        /// Tries so far.
        attempts: u32,
        /// Why the last one failed.
        error: String,
    },
}

/// Where the thread writes: the node's [`Store`], or a fake in tests.
pub trait Sink: Send + 'static {
    /// Write one job's data, durably where [`Write`] says so.
    fn write(&mut self, write: &Write) -> Result<(), StoreError>;
}

impl Sink for Arc<Store> {
    fn write(&mut self, write: &Write) -> Result<(), StoreError> {
        match write {
            Write::Receipts { .. } => self.sync_wal(),
            Write::Registry {
                registrar,
                seq,
                bytes,
            } => self.registry_put(registrar, *seq, bytes),
            Write::Checkpoint {
                epoch,
                registrar,
                bytes,
            } => self.checkpoint_put(*epoch, registrar, bytes),
        }
    }
}

/// The handle the event loop holds.
#[derive(Clone, Debug)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Start the thread writing to `sink`; reports arrive on the returned receiver, which
    /// ends once every handle is dropped and the thread has let go of the sink.
    pub fn start(sink: impl Sink) -> std::io::Result<(Writer, mpsc::Receiver<Done>)> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        // Room for every queued job's report and a failure report each.
        let (done_tx, done) = mpsc::channel(2 * QUEUE + 2);
        std::thread::Builder::new()
            .name("dpow-store".into())
            .spawn(move || run(sink, rx, done_tx))?;
        Ok((Writer { jobs }, done))
    }

    /// Queue a job; a full queue (or a stopped thread) hands it back.
    pub fn try_submit(&self, job: Job) -> Result<(), Job> {
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
        })
    }
}

fn run(mut sink: impl Sink, jobs: mpsc::Receiver<Job>, done: mpsc::Sender<Done>) {
    write_all(&mut sink, jobs, &done);
    // The database goes first: a receiver that sees the reports end may open it again.
    drop(sink);
    drop(done);
}

fn write_all(sink: &mut impl Sink, mut jobs: mpsc::Receiver<Job>, done: &mpsc::Sender<Done>) {
    while let Some(job) = jobs.blocking_recv() {
        let mut attempts = 0u32;
        let mut backoff = FIRST_BACKOFF;
        loop {
            attempts += 1;
            match sink.write(&job.write) {
                Ok(()) => break,
                Err(e) => {
                    let report = Done::Failing {
                        ticket: job.ticket,
                        what: job.write.what(),
                        attempts,
                        error: e.to_string(),
                    };
                    // The event loop is gone: the node is stopping, and an unwritten job was
                    // never acknowledged.
                    if done.blocking_send(report).is_err() {
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if done.blocking_send(Done::Written(job)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Mutex;

    /// Fails its first `fail` writes, then records what it wrote.
    struct Flaky {
        fail: u32,
        wrote: Arc<Mutex<Vec<Write>>>,
    }

    impl Sink for Flaky {
        fn write(&mut self, write: &Write) -> Result<(), StoreError> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(failure());
            }
            self.wrote.lock().unwrap().push(write.clone());
            Ok(())
        }
    }

    #[cfg(feature = "ledger")]
    fn failure() -> StoreError {
        StoreError::Dir {
            path: "test".into(),
            source: std::io::Error::other("disk full"),
        }
    }

    #[cfg(not(feature = "ledger"))]
    fn failure() -> StoreError {
        StoreError::NotBuilt
    }

    fn registry(seq: u64) -> Write {
        Write::Registry {
            registrar: [1; 32],
            seq,
            bytes: vec![seq as u8],
        }
    }

    #[tokio::test]
    async fn a_failing_write_is_retried_reported_and_kept_in_order() {
        let wrote = Arc::new(Mutex::new(Vec::new()));
        let (w, mut done) = Writer::start(Flaky {
            fail: 2,
            wrote: wrote.clone(),
        })
        .unwrap();
        w.try_submit(Job {
            ticket: 1,
            write: registry(1),
        })
        .unwrap();
        w.try_submit(Job {
            ticket: 2,
            write: registry(2),
        })
        .unwrap();
        let mut failing = Vec::new();
        let mut written = Vec::new();
        while written.len() < 2 {
            match done.recv().await.unwrap() {
                Done::Failing {
                    ticket, attempts, ..
                } => failing.push((ticket, attempts)),
                Done::Written(j) => written.push(j.ticket),
            }
        }
        assert_eq!(failing, vec![(1, 1), (1, 2)], "both failures surfaced");
        assert_eq!(written, vec![1, 2], "nothing dropped, order kept");
        assert_eq!(*wrote.lock().unwrap(), vec![registry(1), registry(2)]);
    }

    #[tokio::test]
    async fn a_full_queue_hands_the_job_back() {
        // A sink that blocks until told, so the queue fills.
        struct Gate(std::sync::mpsc::Receiver<()>);
        impl Sink for Gate {
            fn write(&mut self, _: &Write) -> Result<(), StoreError> {
                let _ = self.0.recv();
                Ok(())
            }
        }
        let (open, gate) = std::sync::mpsc::channel();
        let (w, mut done) = Writer::start(Gate(gate)).unwrap();
        let mut queued = 0u64;
        let refused = loop {
            match w.try_submit(Job {
                ticket: queued,
                write: registry(queued),
            }) {
                Ok(()) => queued += 1,
                Err(job) => break job,
            }
            assert!(queued <= QUEUE as u64 + 1, "the queue is bounded");
        };
        assert_eq!(refused.ticket, queued, "the refused job comes back whole");
        for _ in 0..queued {
            open.send(()).unwrap();
        }
        let mut n = 0;
        while n < queued {
            if let Done::Written(_) = done.recv().await.unwrap() {
                n += 1;
            }
        }
        assert!(w.try_submit(refused).is_ok(), "room again once written");
        open.send(()).unwrap();
    }
}
