//! The network id: what binds every signed message and every peer connection to one network.
//!
//! A [`NetworkId`] is the blake2b-256 hash of a network's *canonical genesis*: the genesis fields
//! that define the network (name, profile, registrar keys, timing and epoch rules), encoded with
//! the protocol's canonical codec by the node (`node/src/genesis.rs`), after the domain tag
//! `"dpow/2/network" ‖ 0x00`. Bootstrap addresses, whitespace and comments never enter it. The
//! id enters every signing input ([`crate::envelope::signing_input`]) and, as
//! [`NetworkId::short`], the libp2p protocol names and gossipsub topics.

use std::fmt;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use serde::{Deserialize, Serialize};

/// The 32-byte id of one network (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkId(pub [u8; 32]);

impl NetworkId {
    /// The domain tag hashed before the canonical genesis.
    pub const DOMAIN: &'static [u8] = b"dpow/2/network\0";

    /// The id of the network whose canonical genesis encodes to `canonical`.
    pub fn of_canonical_genesis(canonical: &[u8]) -> NetworkId {
        let mut h = Blake2b::<U32>::new();
        h.update(Self::DOMAIN);
        h.update(canonical);
        let mut out = [0u8; 32];
        out.copy_from_slice(&h.finalize());
        NetworkId(out)
    }

    /// The first 8 bytes in hex (16 characters): how the id appears in protocol names, topics,
    /// logs and stats.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkId({})", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_depends_on_every_byte_and_short_is_its_prefix() {
        let a = NetworkId::of_canonical_genesis(b"genesis a");
        let b = NetworkId::of_canonical_genesis(b"genesis b");
        assert_ne!(a, b);
        assert_eq!(a, NetworkId::of_canonical_genesis(b"genesis a"));
        assert_eq!(a.short().len(), 16);
        assert!(a.to_string().starts_with(&a.short()));
    }
}
