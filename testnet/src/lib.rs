//! Local dpow networks for tests and demos.
#![deny(missing_docs)]
