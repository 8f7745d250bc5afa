//! Identities for dpow.
//!
//! Every actor in a dpow network (service, worker, registrar) is an ed25519 key. This crate
//! owns everything about those keys that is not network protocol:
//! - [`SecretKey`] / [`PublicKey`] / [`Signature`]: signing and strict verification, with the
//!   secret zeroized on drop and never printed;
//! - [`keyfile`]: key files written `0600` and refused when others can read them;
//! - [`address`]: Nano `nano_` account encoding and decoding with checksum, used for payout
//!   addresses and to display public keys.
#![deny(missing_docs)]

pub mod address;
mod error;
pub mod keyfile;
mod sig;

pub use address::{decode_account, encode_account};
pub use error::KeyError;
pub use sig::{PublicKey, SecretKey, Signature};
