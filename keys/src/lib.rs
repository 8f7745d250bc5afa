//! Identities for dpow.
//!
//! Every actor in a dpow network (service, worker, registrar) is an ed25519 key. This crate
//! owns everything about those keys that is not network protocol:
//! - [`SecretKey`] / [`PublicKey`] / [`Signature`]: signing and strict verification, with the
//!   secret zeroized on drop and never printed;
//! - [`keyfile`]: key files written `0600` and refused when others can read them;
//! - [`wallet`]: Nano wallet accounts from a seed (test networks name real accounts);
//! - [`address`]: the `nano_` codec with checksum for payout accounts ([`NanoAccount`]), and
//!   the same codec under the `dpow_` prefix for dpow's own keys.
#![deny(missing_docs)]

pub mod address;
mod error;
pub mod keyfile;
mod sig;
pub mod wallet;

pub use address::{NanoAccount, decode_account, decode_key, encode_account, encode_key};
pub use error::KeyError;
pub use sig::{PreparedKey, PublicKey, SecretKey, Signature};
