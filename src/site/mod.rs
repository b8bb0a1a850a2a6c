//! The homelab as seen over one SSH connection: the cluster client through the tunnel to the
//! k3s API, Vault through a tunnel to its Service, the unseal key Secret, and the readiness of
//! ESO's store and Argo CD's apps.
//!
//! The use cases (`rebuild`, `restore`, `rotate`, `doctor`) are siblings above this module and
//! reach the homelab only through it, so each guarantee is written once: one timeout policy for
//! Vault ([`vault`]), one threshold check before shares are sent ([`Site::unseal`]), one writer of
//! the unseal Secret that wipes its copies and reads it back by fingerprint ([`unseal_secret`]).
//!
//! - [`vault`]: the tunnel-backed Vault client and the unseal.
//! - [`unseal_secret`]: the Secret `vault-unseal-key`, read and written.
//! - [`eso_auth`]: Vault set up for ESO (KV, Kubernetes auth, policy, role) and ESO's login.
//! - [`root_token`]: root tokens recorded by accessor on the server, revoked by the next run.
//! - [`readiness`]: ESO's store, Argo CD's apps, ExternalSecrets, Longhorn volumes: when each is ready.

pub mod eso_auth;
pub mod readiness;
pub mod root_token;
pub mod unseal_secret;
pub mod vault;

use anyhow::Result;
use tokio::sync::OnceCell;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::remote::{HostKeyPolicy, Remote, Target};
use crate::vault::VaultClient;

pub use eso_auth::{EsoAuth, EsoLogin};
pub use unseal_secret::{fingerprints, SecretInfo, SecretLocation, Stored};
pub use vault::{progress_line, Unsealed, VaultTunnel};

/// One SSH connection to the homelab; the cluster and Vault connections are opened on first
/// use (k3s may not run yet) and kept for the run.
pub struct Site {
    pub config: Config,
    pub remote: Remote,
    cluster: OnceCell<Cluster>,
    vault: OnceCell<VaultTunnel>,
}

impl Site {
    /// Connects over SSH; nothing else is opened yet.
    pub async fn connect(config: Config, target: Target, policy: HostKeyPolicy) -> Result<Site> {
        let remote = Remote::connect(target, policy).await?;
        Ok(Site::over(config, remote))
    }

    /// A site over an SSH connection that is already open.
    pub fn over(config: Config, remote: Remote) -> Site {
        Site {
            config,
            remote,
            cluster: OnceCell::new(),
            vault: OnceCell::new(),
        }
    }

    /// The cluster client, connected on first use (k3s must be running).
    pub async fn cluster(&self) -> Result<&Cluster> {
        self.cluster
            .get_or_try_init(|| Cluster::connect(&self.remote))
            .await
    }

    /// Forgets the cluster connection (after k3s restarts, its tunnel may be stale).
    pub fn drop_cluster(&mut self) {
        self.cluster = OnceCell::new();
    }

    /// Vault through a tunnel to its Service's cluster IP, opened on first use.
    pub async fn vault(&self) -> Result<&VaultClient> {
        let tunnel = self
            .vault
            .get_or_try_init(|| async {
                VaultTunnel::open(&self.remote, self.cluster().await?, &self.config.vault).await
            })
            .await?;
        Ok(&tunnel.client)
    }

    /// Forgets the Vault connection (its pod may have moved).
    pub fn drop_vault(&mut self) {
        self.vault = OnceCell::new();
    }

    pub async fn close(&self) {
        self.remote.close().await;
    }
}
