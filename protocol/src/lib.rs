//! The dpow protocol, pure: no I/O, no clocks, no randomness of its own.
//!
//! - [`work`] and [`blake2b`]: Nano work values, validation, difficulty and multiplier math;
//! - [`profile`]: block kinds and the difficulty profiles a network can run;
//!
//! Everything here is deterministic so that every node computes the same answer from the same
//! bytes, and so that it can be tested exhaustively.
#![deny(missing_docs)]

pub mod blake2b;
mod error;
pub mod work;

pub use error::ProtocolError;
pub use work::{Difficulty, Multiplier, Root, Work, is_valid, work_value};
