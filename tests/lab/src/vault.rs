//! `lab-vault`: the Vault stand-in (issue 4, item 2).
//!
//! Contract followed: `../shared/reference/platform-facts.md` §1 "HashiCorp Vault — seal
//! lifecycle" — seal-status, unseal (Shamir shares, progress, threshold, nonce, reset),
//! init, seal, health, and rekey with `require_verification` and the verify step — with
//! Vault's `{"errors":[...]}` bodies and status codes; where the card is silent, upstream
//! Vault's `http/` handlers and `vault/core.go` / `vault/rekey.go`. Each submodule names the
//! sections it follows and what it leaves out:
//!
//! - [`shamir`]: splitting and combining shares in Vault's layout (x-coordinate last);
//! - [`state`]: the barrier (AES-GCM: unseal key → root key → token hashes) and the state
//!   file in the data dir, written atomically;
//! - [`core`]: seal/unseal/init/rekey/verify semantics, in Vault's order of checks;
//! - [`api`]: the HTTP paths, methods and bodies.
//!
//! Storage: everything lives in `<data dir>/lab-vault.json` ([`STATE_FILE`]). A restart is a
//! power loss: the process comes back initialised and sealed, and only the current key opens
//! it. Pending unseal progress and any rekey in progress live in memory only, as in Vault.
//! The data dir is what the Longhorn stand-in backs up and restores (volume `vault-data-lh`).
//!
//! Left out (on purpose): secrets engines, auth methods, tokens other than the initial root
//! token, auto-unseal/recovery keys, PGP-encrypted shares (refused with a clear message),
//! HA/standby, TLS. The lab reaches Vault through loopback or an SSH tunnel only.

pub mod api;
pub mod core;
pub mod shamir;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use state::STATE_FILE;

/// Serves the Vault API on `listener` with its state in `data_dir` until the task is
/// dropped or the listener fails. Fails at once if the data dir holds an unreadable state.
pub async fn serve(listener: tokio::net::TcpListener, data_dir: PathBuf) -> anyhow::Result<()> {
    let core = core::Core::open(data_dir)?;
    let app = api::router(Arc::new(Mutex::new(core)));
    axum::serve(listener, app).await?;
    Ok(())
}

/// A lab-vault running in this process (for tests); stopped — abruptly, like a power
/// loss — when dropped.
pub struct Running {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// `http://127.0.0.1:PORT`, the `VAULT_ADDR` a client uses.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a lab-vault on 127.0.0.1 (random port) over `data_dir`, in this process.
pub async fn start(data_dir: PathBuf) -> anyhow::Result<Running> {
    // Open the state first so a corrupt data dir is reported here, not in the task.
    let core = core::Core::open(data_dir)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = api::router(Arc::new(Mutex::new(core)));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await?;
        Ok(())
    });
    Ok(Running { addr, task })
}
