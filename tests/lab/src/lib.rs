//! rebox-lab: the simulated homelab rebox's tests and `scripts/demo` run against.
//! Never part of the shipped binary.
//!
//! - [`server`]: a real server stand-in (network namespace, overlay root, real sshd + sudo).
//! - [`vault`]: the Vault HTTP API stand-in (`lab-vault`).
//! - [`nas`]: the NAS, a directory of Longhorn backups (fixture builder and reader).

pub mod k3s;
pub mod nas;
pub mod server;
pub mod vault;

/// Re-exported for tests that build NAS fixtures (their times are `chrono` types).
pub use chrono;
