//! `dpow keys`: create key files, show their public side, and convert key text.
//!
//! dpow keys print as `dpow_…` (see `dpow_keys::address`), never as `nano_` accounts: no Nano
//! wallet can spend from a dpow key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use dpow_keys::{NanoAccount, PublicKey, SecretKey, keyfile};
use serde_json::json;

use crate::output::Output;

/// `dpow keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a new ed25519 key file (mode 0600; never overwrites).
    New {
        /// Where to write the key.
        #[arg(long, default_value = "dpow.key", value_name = "PATH")]
        out: PathBuf,
    },
    /// Show the public key of a key file as hex, `dpow_` text and peer id (never the secret).
    Show {
        /// The key file.
        #[arg(long, default_value = "dpow.key", value_name = "PATH")]
        key: PathBuf,
    },
    /// Convert a key between 64 hex digits and `dpow_` text (checking the checksum), or show
    /// the public key of a `nano_` account.
    Address {
        /// A key in hex or `dpow_` text, or a `nano_`/`xrb_` account.
        key_or_account: String,
    },
}

fn describe(pk: &PublicKey, out: Output, extra: Option<(&str, String)>) -> anyhow::Result<()> {
    let peer_id = peer_id_of(pk);
    let mut human = format!(
        "public key  {}\nkey         {pk}\npeer id     {peer_id}",
        pk.to_hex(),
    );
    let mut json = json!({
        "public_key": pk.to_hex(),
        "key": pk.to_string(),
        "peer_id": peer_id,
    });
    if let Some((k, v)) = extra {
        human.push_str(&format!("\n{k:<11} {v}"));
        json[k] = json!(v);
    }
    out.emit(&human, &json)?;
    Ok(())
}

/// The libp2p peer id a node with this key has.
pub(super) fn peer_id_of(pk: &PublicKey) -> String {
    match libp2p::identity::ed25519::PublicKey::try_from_bytes(&pk.0) {
        Ok(k) => libp2p::identity::PublicKey::from(k)
            .to_peer_id()
            .to_string(),
        Err(_) => "-".to_string(),
    }
}

/// Run a `dpow keys` command.
pub(super) fn run(cmd: KeysCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::New { out: path } => {
            let key = SecretKey::generate()?;
            keyfile::write(&path, &key)?;
            describe(
                &key.public(),
                out,
                Some(("file", path.display().to_string())),
            )?;
        }
        KeysCommand::Show { key } => {
            let sk = keyfile::read(&key)?;
            describe(&sk.public(), out, None)?;
        }
        KeysCommand::Address { key_or_account } => {
            let text = key_or_account.trim();
            if text.starts_with("nano_") || text.starts_with("xrb_") {
                let account: NanoAccount = text.parse()?;
                let hex = hex::encode_upper(account.as_bytes());
                out.emit(
                    &format!("public key  {hex}\naccount     {account}  (a Nano account)"),
                    &json!({ "public_key": hex, "account": account.to_string() }),
                )?;
            } else {
                let pk: PublicKey = text.parse()?;
                describe(&pk, out, None)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
