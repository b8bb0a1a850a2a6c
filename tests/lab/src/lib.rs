//! rebox-lab: the simulated homelab rebox's tests and `scripts/demo` run against.
//! Never part of the shipped binary.
//!
//! - [`server`]: a real server stand-in (network namespace, overlay root, real sshd + sudo).
//! - [`bao`]: the lab's Vault, the real OpenBao server (`bao`, installed by `scripts/setup`).
//! - [`nas`]: the NAS, a directory of Longhorn backups (fixture builder and reader).

pub mod bao;
pub mod k3s;
pub mod nas;
pub mod server;

/// Re-exported for tests that build NAS fixtures (their times are `chrono` types).
pub use chrono;
