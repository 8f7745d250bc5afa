//! The dpow node.
#![deny(missing_docs)]
