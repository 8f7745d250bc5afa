//! The replication machine against two books in memory: what a catch-up fetches, and what it
//! refuses to.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use dpow_protocol::MessageId;
use dpow_protocol::ledger::digest_of_ids;
use dpow_protocol::replication::{
    Ask, Books, FETCH_AHEAD_JOBS, MAX_SYNC_FETCH, MAX_SYNC_IDS, Out, Replication, Rule, ids_page,
};

const EPOCH_MS: u64 = 3_600_000;
const PEER: u8 = 7;
/// Receipts per verification job, as the node splits them.
const PER_JOB: usize = 32;

fn id(epoch: u64, n: u64) -> MessageId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    b[8..16].copy_from_slice(&epoch.to_be_bytes());
    MessageId(b)
}

#[derive(Default)]
struct Book {
    epoch_ms: u64,
    epochs: BTreeMap<u64, BTreeSet<MessageId>>,
    rules: HashMap<u64, Rule>,
    /// Checkpointed digests held, per epoch.
    checkpoints: HashMap<u64, [u8; 32]>,
    vouched: Vec<MessageId>,
    /// A light ledger: final epochs a checkpoint vouches for are adopted, not fetched.
    light: bool,
    /// Epochs adopted from a checkpoint, with its digest.
    adopted: BTreeMap<u64, [u8; 32]>,
}

impl Book {
    fn new() -> Self {
        Book {
            epoch_ms: EPOCH_MS,
            ..Book::default()
        }
    }

    fn with(mut self, epoch: u64, ids: impl IntoIterator<Item = u64>) -> Self {
        let set = self.epochs.entry(epoch).or_default();
        set.extend(ids.into_iter().map(|n| id(epoch, n)));
        self
    }

    fn digest(&self, epoch: u64) -> [u8; 32] {
        let ids: Vec<MessageId> = self.epochs[&epoch].iter().copied().collect();
        digest_of_ids(self.epoch_ms, epoch, &ids)
    }

    fn epoch_of(&self, wanted: &MessageId) -> Option<u64> {
        self.epochs
            .iter()
            .find(|(_, ids)| ids.contains(wanted))
            .map(|(e, _)| *e)
    }

    fn count(&self) -> usize {
        self.epochs.values().map(BTreeSet::len).sum()
    }
}

impl Books for Book {
    fn epoch_ms(&self) -> u64 {
        self.epoch_ms
    }

    fn digests(&mut self) -> Vec<(u64, [u8; 32])> {
        let mut all: Vec<(u64, [u8; 32])> =
            self.epochs.keys().map(|e| (*e, self.digest(*e))).collect();
        all.extend(self.adopted.iter().map(|(e, d)| (*e, *d)));
        all.sort_unstable();
        all
    }

    fn holds(&self, id: &MessageId) -> bool {
        self.epochs.values().any(|ids| ids.contains(id))
    }

    fn rule(&self, epoch: u64) -> Rule {
        self.rules.get(&epoch).copied().unwrap_or(Rule::Take)
    }

    fn vouches(&self, epoch: u64, digest: &[u8; 32]) -> bool {
        self.checkpoints.get(&epoch) == Some(digest)
    }

    fn vouch(&mut self, ids: &[MessageId]) -> bool {
        self.vouched.extend_from_slice(ids);
        true
    }

    fn adopt(&mut self, epoch: u64, digest: &[u8; 32]) -> bool {
        if !self.light || !self.vouches(epoch, digest) || self.epochs.contains_key(&epoch) {
            return false;
        }
        self.adopted.insert(epoch, *digest);
        true
    }
}

/// How the peer answers.
#[derive(Clone, Copy, PartialEq)]
enum Peer {
    Honest,
    /// Lists one id more in every epoch than its digest covers.
    PadsLists,
    /// Answers every page with the first page again, saying more follow.
    RepeatsPages,
}

/// When verification jobs come back.
#[derive(Clone, Copy, PartialEq)]
enum Verify {
    /// At once, inside the answer (signatures seen before).
    Inline,
    /// One job between two answers.
    Later,
    /// After every answer asked for: the peer answers faster than receipts are verified.
    Slow,
}

#[derive(Default)]
struct Run {
    outs: Vec<Out<u8>>,
    asks: Vec<Ask>,
    /// Fetches sent while jobs of an earlier answer were still being verified.
    overlapped: usize,
    /// Later pages of ids asked for while jobs were still being verified.
    listed_ahead: usize,
    /// Most jobs waiting at once.
    most_waiting: usize,
}

/// Catch `mine` up from `theirs` until the machine stops asking.
fn catch_up(mine: &mut Book, theirs: &Book, peer: Peer, verify: Verify) -> Run {
    let mut m = Replication::<u8>::new(60_000);
    m.start(PEER, true);
    drive(&mut m, mine, theirs, peer, verify)
}

fn drive(
    m: &mut Replication<u8>,
    mine: &mut Book,
    theirs: &Book,
    peer: Peer,
    verify: Verify,
) -> Run {
    let mut run = Run::default();
    let mut asked: VecDeque<Ask> = VecDeque::new();
    let mut jobs: VecDeque<Vec<(u64, MessageId)>> = VecDeque::new();
    for _ in 0..100_000 {
        for o in m.take_outputs() {
            if let Out::Send { peer: p, ask } = &o {
                assert_eq!(*p, PEER);
                if matches!(ask, Ask::Fetch(_)) && !jobs.is_empty() {
                    run.overlapped += 1;
                }
                if matches!(ask, Ask::Ids { after: Some(_), .. }) && !jobs.is_empty() {
                    run.listed_ahead += 1;
                }
                asked.push_back(ask.clone());
                run.asks.push(ask.clone());
            }
            run.outs.push(o);
        }
        assert!(asked.len() <= 1, "one request at a time: {asked:?}");
        if (verify != Verify::Slow || asked.is_empty())
            && let Some(job) = jobs.pop_front()
        {
            take(mine, &job);
            m.verified(PEER, job.len());
            continue;
        }
        let Some(ask) = asked.pop_front() else {
            return run;
        };
        match ask {
            Ask::Digests => {
                let mut theirs_digests = Vec::new();
                for e in theirs.epochs.keys() {
                    theirs_digests.push((*e, theirs.digest(*e)));
                }
                m.on_digests(PEER, theirs.epoch_ms, &theirs_digests, mine);
            }
            Ask::Ids { epoch, after } => {
                let mut all: Vec<MessageId> = theirs
                    .epochs
                    .get(&epoch)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                if peer == Peer::PadsLists {
                    all.push(id(epoch, u64::MAX));
                    all.sort_unstable();
                }
                let (page, more) = if peer == Peer::RepeatsPages {
                    (&all[..all.len().min(MAX_SYNC_IDS)], true)
                } else {
                    ids_page(&all, after)
                };
                assert!(page.len() <= MAX_SYNC_IDS);
                m.on_ids(PEER, page, more, mine);
            }
            Ask::Fetch(ids) => {
                assert!(ids.len() <= MAX_SYNC_FETCH);
                let found: Vec<(u64, MessageId)> = ids
                    .iter()
                    .filter_map(|i| Some((theirs.epoch_of(i)?, *i)))
                    .collect();
                let chunks: Vec<Vec<(u64, MessageId)>> =
                    found.chunks(PER_JOB).map(<[_]>::to_vec).collect();
                m.on_receipts(PEER, chunks.len());
                match verify {
                    Verify::Inline => {
                        for job in chunks {
                            take(mine, &job);
                            m.verified(PEER, job.len());
                        }
                    }
                    Verify::Later | Verify::Slow => jobs.extend(chunks),
                }
                run.most_waiting = run.most_waiting.max(jobs.len());
            }
        }
    }
    panic!("the catch-up did not end");
}

fn take(book: &mut Book, job: &[(u64, MessageId)]) {
    for (epoch, id) in job {
        book.epochs.entry(*epoch).or_default().insert(*id);
    }
}

fn ended(run: &Run) -> (usize, bool) {
    let ends: Vec<(usize, bool)> = run
        .outs
        .iter()
        .filter_map(|o| match o {
            Out::Ended { got, first, .. } => Some((*got, *first)),
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 1, "one end: {:?}", run.outs);
    ends[0]
}

#[test]
fn a_catch_up_fetches_every_receipt_the_peer_has_in_pages_whichever_way_jobs_return() {
    for verify in [Verify::Inline, Verify::Later] {
        // Epoch 1 the same, epoch 2 overlapping, epoch 3 more ids than one page holds.
        let theirs = Book::new()
            .with(1, 0..10)
            .with(2, 0..700)
            .with(3, 0..(MAX_SYNC_IDS as u64 + 900));
        let mut mine = Book::new().with(1, 0..10).with(2, 500..800);
        let before = mine.count();
        let run = catch_up(&mut mine, &theirs, Peer::Honest, verify);
        let want = 500 + MAX_SYNC_IDS + 900;
        assert_eq!(mine.count(), before + want);
        for (e, ids) in &theirs.epochs {
            assert!(mine.epochs[e].is_superset(ids), "epoch {e}");
        }
        assert_eq!(ended(&run), (want, true));
        // Epoch 1 matched: never listed. Epoch 3 took two pages.
        let listed: Vec<u64> = run
            .asks
            .iter()
            .filter_map(|a| match a {
                Ask::Ids { epoch, .. } => Some(*epoch),
                _ => None,
            })
            .collect();
        assert!(!listed.contains(&1));
        assert_eq!(listed.iter().filter(|e| **e == 3).count(), 2);
        let fetches = run
            .asks
            .iter()
            .filter(|a| matches!(a, Ask::Fetch(_)))
            .count();
        assert_eq!(fetches, want.div_ceil(MAX_SYNC_FETCH));
        if verify == Verify::Later {
            assert!(run.overlapped > 0, "fetching runs ahead of verification");
        }
    }
}

#[test]
fn a_fast_peer_cannot_fill_the_verification_queue_and_id_pages_are_asked_ahead() {
    let theirs = Book::new().with(3, 0..(3 * MAX_SYNC_IDS as u64 + 100));
    let mut mine = Book::new();
    let run = catch_up(&mut mine, &theirs, Peer::Honest, Verify::Slow);
    let want = 3 * MAX_SYNC_IDS + 100;
    assert_eq!(ended(&run), (want, true));
    // Answers come faster than jobs are verified: the machine stops asking ahead once
    // FETCH_AHEAD_JOBS wait, so at most that plus one answer's jobs ever wait.
    let one_answer = MAX_SYNC_FETCH.div_ceil(PER_JOB);
    assert!(
        run.most_waiting <= FETCH_AHEAD_JOBS + one_answer,
        "{} jobs waited at once",
        run.most_waiting
    );
    // And the next page of ids is asked for while receipts are verified, not after.
    assert_eq!(run.listed_ahead, 3, "each later page asked ahead");
    for verify in [Verify::Inline, Verify::Later] {
        let mut mine = Book::new();
        let run = catch_up(&mut mine, &theirs, Peer::Honest, verify);
        assert_eq!(ended(&run), (want, true));
    }
}

#[test]
fn equal_books_cost_one_round_trip() {
    let theirs = Book::new().with(1, 0..50).with(4, 0..3);
    let mut mine = Book::new().with(1, 0..50).with(4, 0..3);
    let run = catch_up(&mut mine, &theirs, Peer::Honest, Verify::Later);
    assert_eq!(run.asks, vec![Ask::Digests]);
    assert_eq!(ended(&run), (0, true));
}

#[test]
fn archived_epochs_take_nothing_more() {
    let theirs = Book::new().with(1, 0..20).with(2, 0..20);
    let mut mine = Book::new().with(1, 0..5);
    mine.rules.insert(1, Rule::Skip);
    catch_up(&mut mine, &theirs, Peer::Honest, Verify::Later);
    assert_eq!(mine.epochs[&1].len(), 5);
    assert_eq!(mine.epochs[&2].len(), 20);
}

#[test]
fn a_final_epoch_is_fetched_only_when_a_checkpoint_vouches_for_the_peers_list() {
    let theirs = Book::new().with(1, 0..300);
    // Vouched: the whole list is checked against the checkpoint, then what lacks is marked
    // and fetched.
    let mut mine = Book::new().with(1, 0..100);
    mine.rules.insert(1, Rule::Vouched);
    mine.checkpoints.insert(1, theirs.digest(1));
    let run = catch_up(&mut mine, &theirs, Peer::Honest, Verify::Later);
    assert_eq!(mine.epochs[&1].len(), 300);
    assert_eq!(mine.vouched.len(), 200);
    assert_eq!(ended(&run).0, 200);

    // The same, but the peer's list is not the one its digest stands for.
    let mut mine = Book::new().with(1, 0..100);
    mine.rules.insert(1, Rule::Vouched);
    mine.checkpoints.insert(1, theirs.digest(1));
    let run = catch_up(&mut mine, &theirs, Peer::PadsLists, Verify::Later);
    assert_eq!(mine.epochs[&1].len(), 100, "nothing taken");
    assert!(mine.vouched.is_empty());
    assert!(run.outs.iter().any(
        |o| matches!(o, Out::Misbehaved { peer: PEER, why } if why.contains("final epoch 1"))
    ));
    assert_eq!(ended(&run), (0, true));

    // No checkpoint held matches: nothing listed, the epoch is reported for asking.
    let mut mine = Book::new().with(1, 0..100);
    mine.rules.insert(1, Rule::Vouched);
    mine.checkpoints.insert(1, [9; 32]);
    let run = catch_up(&mut mine, &theirs, Peer::Honest, Verify::Later);
    assert_eq!(mine.epochs[&1].len(), 100);
    assert!(run.outs.contains(&Out::Unvouched {
        peer: PEER,
        epochs: vec![(1, theirs.digest(1))],
    }));
    assert!(!run.asks.iter().any(|a| matches!(a, Ask::Ids { .. })));
}

#[test]
fn a_checkpoint_arriving_during_a_catch_up_adds_its_epoch() {
    let theirs = Book::new().with(1, 0..40).with(2, 0..40);
    let mut mine = Book::new();
    mine.rules.insert(1, Rule::Vouched);
    let mut m = Replication::<u8>::new(60_000);
    m.start(PEER, false);
    assert_eq!(
        m.take_outputs(),
        vec![Out::Send {
            peer: PEER,
            ask: Ask::Digests
        }]
    );
    let offered: Vec<(u64, [u8; 32])> = vec![(1, theirs.digest(1)), (2, theirs.digest(2))];
    m.on_digests(PEER, EPOCH_MS, &offered, &mut mine);
    let out = m.take_outputs();
    assert!(out.contains(&Out::Unvouched {
        peer: PEER,
        epochs: vec![(1, theirs.digest(1))],
    }));
    // The answer to the node's question comes while epoch 2 is listed.
    mine.checkpoints.insert(1, theirs.digest(1));
    m.on_checkpoints(PEER, &mut mine);
    // Feed the pending list of epoch 2 and go on to the end.
    let listed: Vec<MessageId> = theirs.epochs[&2].iter().copied().collect();
    let (page, more) = ids_page(&listed, None);
    m.on_ids(PEER, page, more, &mut mine);
    let run = drive(&mut m, &mut mine, &theirs, Peer::Honest, Verify::Inline);
    assert_eq!(mine.epochs[&1].len(), 40);
    assert_eq!(mine.epochs[&2].len(), 40);
    assert_eq!(ended(&run), (80, false));
}

#[test]
fn a_light_ledger_adopts_checkpointed_final_epochs_and_fetches_only_the_open_ones() {
    let theirs = Book::new().with(1, 0..300).with(2, 0..200).with(3, 0..50);
    let mut mine = Book::new();
    mine.light = true;
    for e in [1, 2] {
        mine.rules.insert(e, Rule::Vouched);
    }
    mine.checkpoints.insert(1, theirs.digest(1));
    mine.checkpoints.insert(2, theirs.digest(2));
    let run = catch_up(&mut mine, &theirs, Peer::Honest, Verify::Later);
    assert_eq!(
        mine.adopted,
        BTreeMap::from([(1, theirs.digest(1)), (2, theirs.digest(2))])
    );
    assert!(mine.vouched.is_empty(), "nothing of a final epoch fetched");
    assert!(
        run.asks
            .iter()
            .all(|a| !matches!(a, Ask::Ids { epoch, .. } if *epoch != 3)),
        "only the open epoch is listed"
    );
    assert_eq!(mine.count(), 50);
    assert_eq!(ended(&run), (50, true));
    // The books now show the peer's digest for every epoch: the next catch-up asks nothing.
    let again = catch_up(&mut mine, &theirs, Peer::Honest, Verify::Later);
    assert_eq!(again.asks, vec![Ask::Digests]);

    // Books that keep every receipt, with the same checkpoints, fetch them all.
    let mut full = Book::new();
    for e in [1, 2] {
        full.rules.insert(e, Rule::Vouched);
        full.checkpoints.insert(e, theirs.digest(e));
    }
    let run = catch_up(&mut full, &theirs, Peer::Honest, Verify::Later);
    assert!(full.adopted.is_empty());
    assert_eq!(full.count(), 550);
    assert_eq!(ended(&run), (550, true));

    // A light ledger that holds some of a final epoch already lists it as a full one does.
    let mut part = Book::new().with(1, 0..10);
    part.light = true;
    part.rules.insert(1, Rule::Vouched);
    part.checkpoints.insert(1, theirs.digest(1));
    catch_up(&mut part, &theirs, Peer::Honest, Verify::Later);
    assert!(part.adopted.is_empty());
    assert_eq!(part.epochs[&1].len(), 300);
}

#[test]
fn a_light_ledger_adopts_an_epoch_whose_checkpoint_comes_during_the_catch_up() {
    let theirs = Book::new().with(1, 0..40).with(2, 0..40);
    let mut mine = Book::new();
    mine.light = true;
    mine.rules.insert(1, Rule::Vouched);
    let mut m = Replication::<u8>::new(60_000);
    m.start(PEER, false);
    m.take_outputs();
    let offered: Vec<(u64, [u8; 32])> = vec![(1, theirs.digest(1)), (2, theirs.digest(2))];
    m.on_digests(PEER, EPOCH_MS, &offered, &mut mine);
    assert!(m.take_outputs().contains(&Out::Unvouched {
        peer: PEER,
        epochs: vec![(1, theirs.digest(1))],
    }));
    mine.checkpoints.insert(1, theirs.digest(1));
    m.on_checkpoints(PEER, &mut mine);
    assert_eq!(mine.adopted, BTreeMap::from([(1, theirs.digest(1))]));
    let listed: Vec<MessageId> = theirs.epochs[&2].iter().copied().collect();
    let (page, more) = ids_page(&listed, None);
    m.on_ids(PEER, page, more, &mut mine);
    let run = drive(&mut m, &mut mine, &theirs, Peer::Honest, Verify::Inline);
    assert!(
        !run.asks
            .iter()
            .any(|a| matches!(a, Ask::Ids { epoch: 1, .. }))
    );
    assert!(!mine.epochs.contains_key(&1));
    assert_eq!(ended(&run), (40, false));
}

#[test]
fn another_epoch_length_ends_the_catch_up_without_blame() {
    let mut theirs = Book::new().with(1, 0..10);
    theirs.epoch_ms = EPOCH_MS / 2;
    let mut mine = Book::new();
    let run = catch_up(&mut mine, &theirs, Peer::Honest, Verify::Inline);
    assert!(run.outs.contains(&Out::Incompatible {
        peer: PEER,
        epoch_ms: EPOCH_MS / 2
    }));
    assert!(!run.outs.iter().any(|o| matches!(o, Out::Misbehaved { .. })));
    assert_eq!(ended(&run), (0, true));
    assert_eq!(mine.count(), 0);
}

#[test]
fn answers_nobody_asked_for_are_ignored_and_a_failure_ends_the_catch_up() {
    let mut mine = Book::new();
    let mut m = Replication::<u8>::new(60_000);
    // No catch-up with the peer: nothing it sends is taken or asked about.
    m.on_digests(PEER, EPOCH_MS, &[(1, [1; 32])], &mut mine);
    m.on_ids(PEER, &[id(1, 1)], true, &mut mine);
    m.on_receipts(PEER, 3);
    m.verified(PEER, 3);
    assert!(m.take_outputs().is_empty());
    // Ids before any epoch is listed are dropped too.
    m.start(PEER, false);
    m.take_outputs();
    m.on_ids(PEER, &[id(1, 1)], false, &mut mine);
    assert!(m.take_outputs().is_empty());
    m.failed(PEER);
    assert_eq!(
        m.take_outputs(),
        vec![Out::Ended {
            peer: PEER,
            got: 0,
            first: false
        }]
    );
    assert!(!m.is_catching_up(&PEER));
}

#[test]
fn one_peer_is_picked_every_period() {
    let mut m = Replication::<u8>::new(1_000);
    let peers = [1u8, 2, 3];
    m.on_tick(10_000, &peers, 0);
    assert!(
        m.take_outputs().is_empty(),
        "the first period counts from the first tick"
    );
    assert_eq!(m.next_tick_ms(), Some(11_000));
    m.on_tick(10_999, &peers, 0);
    assert!(m.take_outputs().is_empty());
    m.on_tick(11_000, &peers, 4);
    assert_eq!(
        m.take_outputs(),
        vec![Out::Send {
            peer: 2,
            ask: Ask::Digests
        }]
    );
    // Already catching up with it: a second start changes nothing.
    m.on_tick(12_000, &peers, 1);
    assert!(m.take_outputs().is_empty());
    assert_eq!(m.running(), 1);
}

#[test]
fn a_peer_that_asks_is_caught_up_with_in_return_once_a_period() {
    const EVERY: u64 = 60_000;
    let digests = |peer| Out::Send {
        peer,
        ask: Ask::Digests,
    };
    // Node A starts a periodic catch-up with B; B, asked, catches up with A in return.
    let (mut a, mut b) = (Replication::<u8>::new(EVERY), Replication::<u8>::new(EVERY));
    a.on_tick(0, &[], 0);
    b.on_tick(0, &[], 0);
    a.on_tick(EVERY, &[2], 0);
    assert_eq!(a.take_outputs(), vec![digests(2)]);
    b.on_asked(1, EVERY + 10);
    assert_eq!(b.take_outputs(), vec![digests(1)]);
    // A is catching up with B: B's question starts nothing more...
    a.on_asked(2, EVERY + 20);
    assert!(a.take_outputs().is_empty());
    // ... nor after A's catch-up ended, within the period: no ping-pong.
    a.failed(2);
    a.take_outputs();
    a.on_asked(2, EVERY + 30);
    assert!(a.take_outputs().is_empty());
    b.failed(1);
    b.take_outputs();
    b.on_asked(1, EVERY + 40);
    assert!(b.take_outputs().is_empty(), "B caught up with A lately");
    // A period later B answers in kind again.
    b.on_tick(2 * EVERY + 10, &[], 0);
    b.on_asked(1, 2 * EVERY + 10);
    assert_eq!(b.take_outputs(), vec![digests(1)]);
}

#[test]
fn a_peer_that_repeats_or_reorders_its_id_pages_is_reported_and_the_catch_up_ends() {
    let theirs = Book::new().with(1, 0..(MAX_SYNC_IDS as u64 + 10));
    let mut mine = Book::new();
    let run = catch_up(&mut mine, &theirs, Peer::RepeatsPages, Verify::Inline);
    assert!(
        run.outs
            .iter()
            .any(|o| matches!(o, Out::Misbehaved { why, .. } if why.contains("ascending")))
    );
    // The first page was taken; the repeat ended it instead of looping.
    assert_eq!(mine.count(), MAX_SYNC_IDS);
    assert_eq!(ended(&run), (MAX_SYNC_IDS, true));

    // Out of order within a page.
    let mut m = Replication::<u8>::new(60_000);
    m.start(PEER, false);
    m.on_digests(PEER, EPOCH_MS, &[(1, [1; 32])], &mut mine);
    m.take_outputs();
    let (a, b) = (id(1, 8).min(id(1, 9)), id(1, 8).max(id(1, 9)));
    m.on_ids(PEER, &[b, a], false, &mut mine);
    assert!(
        m.take_outputs()
            .iter()
            .any(|o| matches!(o, Out::Misbehaved { .. }))
    );
    assert!(!m.is_catching_up(&PEER));
}
