//! Epoch archives: the receipts of one epoch in a file, with the registrars' checkpoints of it,
//! written by `dpow ledger export` and `dpow ledger prune` and checked offline by `dpow ledger
//! verify-archive` (only the genesis file is needed).
//!
//! ```text
//! "DPOWARC1"                    8 bytes
//! header length                 u32, little-endian
//! header                        postcard (ArchiveHeader), at most 16 MiB
//! receipts, ascending by id:    u32 length (little-endian) ‖ envelope, `header.receipts` times
//! ```
//!
//! The header names the network, the epoch and its length, the digest and receipt count the
//! books held for it, and carries every checkpoint of the epoch that the node held, as signed
//! envelopes. [`verify`] re-checks every receipt's signatures (on every core), recomputes the
//! digest and the credits per payout account, and says which checkpoints agree: an archive
//! that a registrar's checkpoint vouches for is the epoch's books, whoever kept the file.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use dpow_keys::{NanoAccount, PublicKey};
use dpow_protocol::ledger::{Ledger, digest_of_ids, epoch_of};
use dpow_protocol::{Checkpoint, Message, MessageId, NetworkId, Receipt, Signed};
use serde::{Deserialize, Serialize};

/// The first bytes of every archive (format 1).
const MAGIC: &[u8; 8] = b"DPOWARC1";
/// The longest header read (checkpoints of up to 1,000 accounts each, a few registrars).
const MAX_HEADER_BYTES: u32 = 16 << 20;
/// Receipts decoded and verified in parallel per batch.
const BATCH: usize = 4096;

/// What an archive says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveHeader {
    /// The network's id (the receipts are signed for it).
    pub network: [u8; 32],
    /// The network's epoch length.
    pub epoch_ms: u64,
    /// The epoch archived.
    pub epoch: u64,
    /// Its digest in the books it was taken from.
    pub digest: [u8; 32],
    /// Receipts in the file (every receipt the books held for the epoch, evidence included).
    pub receipts: u64,
    /// The checkpoints of the epoch the node held, as signed envelopes.
    pub checkpoints: Vec<Vec<u8>>,
}

/// Write an archive to `path` (through a temporary file, synced, then renamed, so a crash
/// leaves either the whole archive or none). `receipts` must be the epoch's envelopes in
/// ascending id order, `header.receipts` of them.
pub fn write(
    path: &Path,
    header: &ArchiveHeader,
    receipts: impl IntoIterator<Item = anyhow::Result<Vec<u8>>>,
) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    let written = write_file(&tmp, header, receipts);
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("moving the archive to {}", path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn write_file(
    tmp: &Path,
    header: &ArchiveHeader,
    receipts: impl IntoIterator<Item = anyhow::Result<Vec<u8>>>,
) -> anyhow::Result<()> {
    let file = std::fs::File::create(tmp)
        .with_context(|| format!("creating the archive {}", tmp.display()))?;
    let mut w = BufWriter::new(file);
    let head = postcard::to_allocvec(header).context("encoding the archive header")?;
    w.write_all(MAGIC)?;
    w.write_all(&u32::try_from(head.len())?.to_le_bytes())?;
    w.write_all(&head)?;
    let mut n = 0u64;
    for r in receipts {
        let r = r?;
        w.write_all(&u32::try_from(r.len())?.to_le_bytes())?;
        w.write_all(&r)?;
        n += 1;
    }
    if n != header.receipts {
        bail!(
            "the books listed {} receipts for epoch {} but {n} were read",
            header.receipts,
            header.epoch
        );
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

/// What [`verify`] found.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The archive's header.
    pub header: ArchiveHeader,
    /// The digest recomputed from the receipts' ids.
    pub digest: [u8; 32],
    /// Credits per payout account recomputed from the receipts.
    pub credits: BTreeMap<NanoAccount, u128>,
    /// Credits of results that named no account.
    pub unclaimed: u128,
    /// Registrars (of this network's genesis) whose checkpoint agrees with the receipts in
    /// digest, count and credits.
    pub vouched_by: Vec<PublicKey>,
    /// Checkpoints that do not: their registrar and why.
    pub disagreeing: Vec<(String, String)>,
}

impl Verified {
    /// Whether the receipts are the epoch's books as a registrar signed them.
    pub fn is_vouched(&self) -> bool {
        self.digest == self.header.digest && !self.vouched_by.is_empty()
    }
}

fn read_u32(r: &mut impl Read) -> std::io::Result<Option<u32>> {
    let mut b = [0u8; 4];
    match r.read_exact(&mut b) {
        Ok(()) => Ok(Some(u32::from_le_bytes(b))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Read the archive at `path` and check it for network `net` (epochs of `epoch_ms`) with the
/// genesis registrars `registrars`: every receipt's signatures and epoch, their order, the
/// count and digest, and each checkpoint against the recomputed credits. An archive that is
/// malformed, of another network or holds a bad receipt is an error naming what is wrong;
/// one whose checkpoints disagree is answered with [`Verified::is_vouched`] false.
pub fn verify(
    path: &Path,
    net: &NetworkId,
    epoch_ms: u64,
    registrars: &[PublicKey],
) -> anyhow::Result<Verified> {
    use rayon::prelude::*;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = BufReader::new(file);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .context("reading the archive's first bytes")?;
    if &magic != MAGIC {
        bail!("{} is not a dpow epoch archive", path.display());
    }
    let len = read_u32(&mut r)?.context("the archive ends in its header")?;
    if len > MAX_HEADER_BYTES {
        bail!("the archive's header claims {len} bytes, more than any archive has");
    }
    let mut head = vec![0u8; len as usize];
    r.read_exact(&mut head)
        .context("the archive ends in its header")?;
    let header: ArchiveHeader =
        postcard::from_bytes(&head).context("the archive's header does not decode")?;
    if header.network != net.0 {
        bail!("the archive is of another network than this genesis file's");
    }
    if header.epoch_ms != epoch_ms {
        bail!(
            "the archive's epochs are {} ms long, this network's {epoch_ms} ms",
            header.epoch_ms
        );
    }
    let mut ledger = Ledger::new(epoch_ms);
    let mut ids: Vec<MessageId> = Vec::new();
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        while batch.len() < BATCH {
            let Some(n) = read_u32(&mut r)? else { break };
            if n as usize > Receipt::MAX_BYTES {
                bail!(
                    "receipt {} of the archive claims {n} bytes",
                    ids.len() + batch.len()
                );
            }
            let mut b = vec![0u8; n as usize];
            r.read_exact(&mut b)
                .context("the archive ends inside a receipt")?;
            batch.push(b);
        }
        if batch.is_empty() {
            break;
        }
        let decoded: Vec<_> = batch
            .par_iter()
            .map(|b| Signed::<Receipt>::decode(b, net))
            .collect();
        for d in decoded {
            let i = ids.len();
            let receipt = d.with_context(|| format!("receipt {i} of the archive"))?;
            let e = epoch_of(receipt.payload().accepted_ms, epoch_ms);
            if e != header.epoch {
                bail!(
                    "receipt {} is of epoch {e}, not the archive's {}",
                    receipt.id(),
                    header.epoch
                );
            }
            if ids.last().is_some_and(|last| *last >= receipt.id()) {
                bail!("receipt {} is out of order or repeated", receipt.id());
            }
            ids.push(receipt.id());
            // Two receipts for one request are evidence, a third is refused: as in the books.
            if let Err(e) = ledger.ingest(receipt) {
                bail!("receipt {i} of the archive: {e}");
            }
        }
    }
    if ids.len() as u64 != header.receipts {
        bail!(
            "the archive's header says {} receipts, the file holds {}",
            header.receipts,
            ids.len()
        );
    }
    let digest = digest_of_ids(epoch_ms, header.epoch, &ids);
    let claims = ledger.claims_in_epoch(header.epoch);
    let mut vouched_by = Vec::new();
    let mut disagreeing = Vec::new();
    for bytes in &header.checkpoints {
        let c = match Signed::<Checkpoint>::decode(bytes, net) {
            Ok(c) => c,
            Err(e) => {
                disagreeing.push(("?".into(), format!("does not verify: {e}")));
                continue;
            }
        };
        let p = c.payload();
        let who = p.registrar.to_string();
        let why = if !registrars.contains(&p.registrar) {
            Some("signed by a key that is no registrar of this network")
        } else if p.epoch != header.epoch || p.epoch_ms != epoch_ms {
            Some("of another epoch")
        } else if p.digest != digest || p.receipts != ids.len() as u64 {
            Some("states another digest or receipt count")
        } else if !p.states_claims(&claims) {
            Some("states other credits than the receipts give")
        } else {
            None
        };
        match why {
            None => vouched_by.push(p.registrar),
            Some(why) => disagreeing.push((who, why.into())),
        }
    }
    Ok(Verified {
        header,
        digest,
        credits: claims.accounts,
        unclaimed: claims.unclaimed,
        vouched_by,
        disagreeing,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use dpow_protocol::WorkRequest;
    use dpow_testkit::builders::{self, NET, NOW, OTHER_NET, account, key, sign};

    use super::*;

    const EPOCH_MS: u64 = 1_000;

    /// An epoch's receipts (ascending by id) and a registrar's checkpoint that agrees.
    fn epoch() -> (Vec<Signed<Receipt>>, Signed<Checkpoint>, u64) {
        let (service, worker, registrar) = (key(10), key(20), key(1));
        let e = epoch_of(NOW, EPOCH_MS);
        let mut ledger = Ledger::new(EPOCH_MS);
        let mut rs: Vec<_> = (0..40u64)
            .map(|i| {
                let req = sign(
                    WorkRequest {
                        nonce: i,
                        ..builders::request(&service)
                    },
                    &service,
                );
                let work = builders::solved(&req, &worker).payload().work;
                let res = sign(
                    dpow_protocol::WorkResult {
                        payout: (!i.is_multiple_of(4)).then(|| account((i % 2) as u8 + 1)),
                        ..builders::result(&req, &worker, work)
                    },
                    &worker,
                );
                builders::receipt(&service, &req, res, NOW - NOW % EPOCH_MS + i)
            })
            .collect();
        rs.sort_by_key(|r| r.id());
        for r in &rs {
            ledger.ingest(r.clone()).unwrap();
        }
        let claims = ledger.claims_in_epoch(e);
        let c = Checkpoint {
            digest: ledger.epoch_digest(e),
            receipts: rs.len() as u64,
            credits: claims.accounts.into_iter().collect(),
            unclaimed: claims.unclaimed,
            ..builders::checkpoint(&registrar, e, EPOCH_MS, NOW)
        };
        (rs, sign(c, &registrar), e)
    }

    fn header(rs: &[Signed<Receipt>], cps: &[&Signed<Checkpoint>], e: u64) -> ArchiveHeader {
        let ids: Vec<_> = rs.iter().map(|r| r.id()).collect();
        ArchiveHeader {
            network: NET.0,
            epoch_ms: EPOCH_MS,
            epoch: e,
            digest: digest_of_ids(EPOCH_MS, e, &ids),
            receipts: rs.len() as u64,
            checkpoints: cps.iter().map(|c| c.bytes().to_vec()).collect(),
        }
    }

    fn write_to(path: &Path, h: &ArchiveHeader, rs: &[Signed<Receipt>]) {
        write(path, h, rs.iter().map(|r| Ok(r.bytes().to_vec()))).unwrap();
    }

    #[test]
    fn an_archive_verifies_offline_against_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (rs, cp, e) = epoch();
        let path = dir.path().join("a.dpowarc");
        write_to(&path, &header(&rs, &[&cp], e), &rs);
        assert!(!path.with_extension("partial").exists());
        let v = verify(&path, &NET, EPOCH_MS, &[key(1).public()]).unwrap();
        assert!(v.is_vouched(), "{v:?}");
        assert_eq!(v.vouched_by, vec![key(1).public()]);
        assert_eq!(v.credits.len(), 2);
        assert!(v.unclaimed > 0);
        // A registrar this network does not have vouches for nothing.
        let v = verify(&path, &NET, EPOCH_MS, &[key(2).public()]).unwrap();
        assert!(!v.is_vouched());
        assert_eq!(v.disagreeing.len(), 1);
        // Another network's genesis, another epoch length: refused.
        assert!(verify(&path, &OTHER_NET, EPOCH_MS, &[]).is_err());
        assert!(verify(&path, &NET, 2 * EPOCH_MS, &[]).is_err());
    }

    #[test]
    fn a_tampered_or_incomplete_archive_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (rs, cp, e) = epoch();
        let reg = [key(1).public()];
        let good = dir.path().join("good.dpowarc");
        write_to(&good, &header(&rs, &[&cp], e), &rs);
        let bytes = std::fs::read(&good).unwrap();
        let bad = dir.path().join("bad.dpowarc");
        let check = |b: &[u8]| {
            std::fs::write(&bad, b).unwrap();
            verify(&bad, &NET, EPOCH_MS, &reg)
        };
        // A bit flipped in the last receipt's signature.
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(check(&flipped).is_err());
        // Cut short, inside a receipt and at a boundary (one receipt missing).
        assert!(check(&bytes[..bytes.len() - 10]).is_err());
        let last = rs.last().unwrap().bytes().len() + 4;
        assert!(check(&bytes[..bytes.len() - last]).is_err());
        // Not an archive; a header claiming more than any archive has.
        assert!(check(b"not an archive at all").is_err());
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(check(&huge).is_err());
        // A receipt length past any receipt's.
        let mut long = bytes.clone();
        let first = 8 + 4 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        long[first..first + 4].copy_from_slice(&10_000u32.to_le_bytes());
        assert!(check(&long).is_err());
        // Out of order.
        let mut swapped = rs.clone();
        swapped.swap(0, 1);
        let path = dir.path().join("swapped.dpowarc");
        write_to(&path, &header(&swapped, &[&cp], e), &swapped);
        assert!(verify(&path, &NET, EPOCH_MS, &reg).is_err());
        // One receipt left out, the header and digest made to fit: well-formed, but the
        // checkpoint no longer agrees.
        let fewer = &rs[1..];
        let path = dir.path().join("fewer.dpowarc");
        write_to(&path, &header(fewer, &[&cp], e), fewer);
        let v = verify(&path, &NET, EPOCH_MS, &reg).unwrap();
        assert!(!v.is_vouched());
        // A receipt of another epoch.
        let (service, worker) = (key(10), key(20));
        let req = sign(builders::request(&service), &service);
        let res = builders::solved(&req, &worker);
        let other = builders::receipt(&service, &req, res, NOW + 5 * EPOCH_MS);
        let path = dir.path().join("other.dpowarc");
        let one = [other];
        write_to(&path, &header(&one, &[], e), &one);
        assert!(verify(&path, &NET, EPOCH_MS, &reg).is_err());
        // The writer refuses a count that the books did not hold.
        let mut h = header(&rs, &[], e);
        h.receipts += 1;
        let path = dir.path().join("short.dpowarc");
        assert!(write(&path, &h, rs.iter().map(|r| Ok(r.bytes().to_vec()))).is_err());
        assert!(!path.exists());
    }
}
