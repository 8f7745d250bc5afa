//! `dpow registry`: registrar decisions, signed with a registrar key and spread by gossip.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use dpow_keys::{PublicKey, keyfile};
use dpow_protocol::{Credits, RegistryAction};
use serde_json::json;

use super::client::ClientArgs;
use super::confirm;
use super::registry_seq::{self, SeqFile};
use crate::output::Output;

/// `dpow registry ...`
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RegistryCommand,
    /// How to reach the network.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Sign even when the network holds newer entries of this key than its sequence file
    /// (`KEY.seq`, beside the key file) records, taking the network's count: only when you
    /// know why (the file was lost or restored from an old backup), never while another
    /// machine signs with the key.
    #[arg(long, global = true)]
    pub adopt_network_seq: bool,
}

/// The registry actions.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Admit a service to the network.
    RegisterService {
        /// The registrar key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The service's public key (dpow_ text or hex).
        #[arg(long, value_name = "KEY")]
        service: PublicKey,
        /// A display name.
        #[arg(long)]
        name: String,
    },
    /// Add credits to a service.
    Grant {
        /// The registrar key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The service.
        #[arg(long, value_name = "KEY")]
        service: PublicKey,
        /// How many credits (1 = one receive-difficulty work).
        #[arg(long)]
        credits: u64,
    },
    /// Stop serving a service, or stop accepting a worker's results.
    Ban {
        /// The registrar key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// A service to ban.
        #[arg(long, value_name = "KEY", group = "who", required = true)]
        service: Option<PublicKey>,
        /// A worker to ban.
        #[arg(long, value_name = "KEY", group = "who")]
        worker: Option<PublicKey>,
        /// Why, for the record.
        #[arg(long)]
        reason: String,
    },
    /// Lift a ban.
    Unban {
        /// The registrar key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// A service to unban.
        #[arg(long, value_name = "KEY", group = "who", required = true)]
        service: Option<PublicKey>,
        /// A worker to unban.
        #[arg(long, value_name = "KEY", group = "who")]
        worker: Option<PublicKey>,
    },
    /// Show the registry as the network's nodes hold it.
    List,
    /// Sign a checkpoint of a final epoch: its digest, receipt count and credits per payout
    /// account, as computed here from receipts fetched from the network and verified here.
    Checkpoint {
        /// The registrar key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The epoch (default: the newest final one).
        #[arg(long)]
        epoch: Option<u64>,
    },
}

/// Run `dpow registry`.
pub(super) fn run(a: RegistryArgs, out: Output) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(a, out))
}

async fn run_async(a: RegistryArgs, out: Output) -> anyhow::Result<ExitCode> {
    if let RegistryCommand::Checkpoint { key, epoch } = &a.command {
        return checkpoint(&a.client, key, *epoch, out).await;
    }
    let (key_path, action) = match a.command {
        RegistryCommand::Checkpoint { .. } => anyhow::bail!("handled above"),
        RegistryCommand::List => {
            let node = a.client.connect(None).await?;
            let entries = node.registry_entries().await?;
            let mut human = String::new();
            let mut rows = Vec::new();
            for e in &entries {
                let p = e.payload();
                let what = describe(&p.action);
                human.push_str(&format!(
                    "{}#{:<4} {what}\n",
                    &p.registrar.to_string()[..12],
                    p.seq
                ));
                rows.push(json!({
                    "registrar": p.registrar.to_string(),
                    "seq": p.seq,
                    "created_ms": p.created_ms,
                    "action": what,
                    "id": e.id().to_string(),
                }));
            }
            if entries.is_empty() {
                human.push_str("the registry is empty\n");
            }
            out.emit(&human, &json!({ "entries": rows }))?;
            node.shutdown().await?;
            return Ok(ExitCode::SUCCESS);
        }
        RegistryCommand::RegisterService { key, service, name } => {
            (key, RegistryAction::RegisterService { service, name })
        }
        RegistryCommand::Grant {
            key,
            service,
            credits,
        } => (
            key,
            RegistryAction::GrantCredits {
                service,
                credits: Credits(credits),
            },
        ),
        RegistryCommand::Ban {
            key,
            service,
            worker,
            reason,
        } => match (service, worker) {
            (Some(service), _) => (key, RegistryAction::BanService { service, reason }),
            (None, Some(worker)) => (key, RegistryAction::BanWorker { worker, reason }),
            (None, None) => anyhow::bail!("--service or --worker is required"),
        },
        RegistryCommand::Unban {
            key,
            service,
            worker,
        } => match (service, worker) {
            (Some(service), _) => (key, RegistryAction::UnbanService { service }),
            (None, Some(worker)) => (key, RegistryAction::UnbanWorker { worker }),
            (None, None) => anyhow::bail!("--service or --worker is required"),
        },
    };
    let registrar = keyfile::read(&key_path)?;
    let network = crate::genesis::Genesis::load(&a.client.genesis)?.network;
    let seq_path = registry_seq::path_for(&key_path);
    let mut seq_file = SeqFile::load(&seq_path)?;
    let what = describe(&action);
    let node = a.client.connect(None).await?;
    let on_network = node
        .registry_entries()
        .await?
        .iter()
        .map(|e| e.payload())
        .filter(|p| p.registrar == registrar.public())
        .map(|p| p.seq)
        .max()
        .unwrap_or(0);
    let next = match registry_seq::choose(
        seq_file.networks.get(&network).copied(),
        on_network,
        a.adopt_network_seq,
        &seq_path,
    ) {
        Ok(next) => next,
        Err(e) => {
            node.shutdown().await?;
            return Err(e.into());
        }
    };
    if let Some(note) = &next.note {
        tracing::warn!("{note}");
    }
    let seq = node
        .registry_at(action, registrar.clone(), next.seq)
        .await?;
    seq_file.record(&seq_path, &network, seq)?;
    // Stay until a peer holds it: this short-lived node may take unsent bytes with it.
    let entry = node
        .registry_entries()
        .await?
        .into_iter()
        .find(|e| e.payload().registrar == registrar.public() && e.payload().seq == seq)
        .context("the node does not hold the entry it just published")?;
    let held = confirm::held_by_a_peer(
        &node,
        confirm::Published::Entry(entry.bytes()),
        confirm::CONFIRM_LIMIT,
    )
    .await?;
    node.shutdown().await?;
    if held.is_none() {
        tracing::warn!(
            "no peer holds entry #{seq} after {:?}: it may not have reached the network; check with `dpow status` on a node, and publish again only if it is missing",
            confirm::CONFIRM_LIMIT
        );
    }
    out.emit(
        &format!(
            "published entry #{seq}: {what} ({})",
            held_by(held.as_ref())
        ),
        &json!({
            "registrar": registrar.public().to_string(),
            "seq": seq,
            "action": what,
            "note": next.note,
            "held_by": held.map(|p| p.to_string()),
        }),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Which peer confirmed holding what was published, for the summary line.
fn held_by(peer: Option<&libp2p::PeerId>) -> String {
    match peer {
        Some(p) => format!("held by peer {p}"),
        None => "no peer confirmed holding it".to_owned(),
    }
}

fn describe(a: &RegistryAction) -> String {
    match a {
        RegistryAction::RegisterService { service, name } => {
            format!("register service {} as {name:?}", service)
        }
        RegistryAction::GrantCredits { service, credits } => {
            format!("grant {} credits to {}", credits.0, service)
        }
        RegistryAction::BanService { service, reason } => {
            format!("ban service {} ({reason})", service)
        }
        RegistryAction::UnbanService { service } => {
            format!("unban service {}", service)
        }
        RegistryAction::BanWorker { worker, reason } => {
            format!("ban worker {} ({reason})", worker)
        }
        RegistryAction::UnbanWorker { worker } => format!("unban worker {}", worker),
    }
}

/// `dpow registry checkpoint`: catch up with a peer's books, check the epoch is final, sign
/// what the books say about it and publish that.
async fn checkpoint(
    client: &ClientArgs,
    key_path: &std::path::Path,
    epoch: Option<u64>,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let registrar = keyfile::read(key_path)
        .with_context(|| format!("registrar key file {}", key_path.display()))?;
    let genesis = crate::genesis::Genesis::load(&client.genesis)?;
    if !genesis.registrars.contains(&registrar.public()) {
        anyhow::bail!(
            "{} is not a registrar of network {}",
            registrar.public(),
            genesis.network
        );
    }
    let finality = genesis.finality;
    let now = crate::net::now_ms();
    let epoch = match epoch {
        Some(e) => e,
        None => finality
            .last_final(now)
            .ok_or_else(|| anyhow::anyhow!("no epoch of this network is final yet"))?,
    };
    if !finality.is_final(epoch, now) {
        anyhow::bail!(
            "epoch {epoch} is not final until {} ms (unix time): a checkpoint of open books could be contradicted by receipts still to come",
            finality.final_at(epoch)
        );
    }
    let node = client.connect_with_books().await?;
    let (books, _registry) = node.ledger().await?;
    let claims = books.claims_in_epoch(epoch);
    if claims.accounts.len() > dpow_protocol::checkpoint::MAX_CHECKPOINT_ACCOUNTS {
        anyhow::bail!(
            "epoch {epoch} pays {} accounts, more than a checkpoint lists ({})",
            claims.accounts.len(),
            dpow_protocol::checkpoint::MAX_CHECKPOINT_ACCOUNTS
        );
    }
    let receipts = books.receipt_ids_in_epoch(epoch).len() as u64;
    let c = dpow_protocol::Checkpoint {
        registrar: registrar.public(),
        epoch,
        epoch_ms: books.epoch_ms(),
        digest: books.epoch_digest(epoch),
        receipts,
        credits: claims.accounts.into_iter().collect(),
        unclaimed: claims.unclaimed,
        created_ms: now,
    };
    let signed = dpow_protocol::Signed::sign(c, &registrar, &genesis.id)?;
    node.publish_checkpoint(signed.bytes().to_vec()).await?;
    // Stay until a peer holds it: this short-lived node may take unsent bytes with it.
    let held = confirm::held_by_a_peer(
        &node,
        confirm::Published::Checkpoint {
            epoch,
            bytes: signed.bytes(),
        },
        confirm::CONFIRM_LIMIT,
    )
    .await?;
    node.shutdown().await?;
    if held.is_none() {
        tracing::warn!(
            "no peer holds the checkpoint of epoch {epoch} after {:?}: it may not have reached the network; publishing it again is harmless",
            confirm::CONFIRM_LIMIT
        );
    }
    let p = signed.payload();
    out.emit(
        &format!(
            "published checkpoint of epoch {epoch}: {receipts} receipts, digest {}, {} payout accounts, {} credits claimed, {} unclaimed ({})",
            hex::encode(p.digest),
            p.credits.len(),
            p.claimed(),
            p.unclaimed,
            held_by(held.as_ref())
        ),
        &json!({
            "registrar": registrar.public().to_string(),
            "epoch": epoch,
            "receipts": receipts,
            "digest": hex::encode(p.digest),
            "accounts": p.credits.len(),
            "claimed": p.claimed().to_string(),
            "unclaimed": p.unclaimed.to_string(),
            "held_by": held.map(|p| p.to_string()),
        }),
    )?;
    Ok(ExitCode::SUCCESS)
}
