//! The dpow node and its command-line interface.
//!
//! - [`cli`]: the `dpow` command (clap), one module per subcommand;
//! - [`browser`]: the `/contribute` page and the bridge that carries browser workers;
//! - [`browser_assets`]: the browser worker's WebAssembly kernel and scripts;
//! - [`devices`]: CPU threads and OpenCL devices selected on the command line;
//! - [`output`]: human-readable or JSON output for every command;
//! - [`config`]: `dpow node`'s configuration (file, environment, flags);
//! - [`control`]: the node's local control socket (backups while it runs);
//! - [`store`]: the node's RocksDB database (receipts, DHT records, precache).
#![deny(missing_docs)]

pub mod archive;
pub mod browser;
pub mod browser_assets;
pub mod cli;
pub mod config;
pub mod control;
pub mod devices;
pub mod gateway;
pub mod genesis;
pub mod http;
pub mod net;
pub mod output;
pub mod store;
