//! Vault as the laptop reaches it: a tunnel over the SSH connection to the Vault Service's
//! cluster IP (as the node sees it), one timeout policy for every use case, and the unseal
//! with one threshold check and one set of messages.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::wait::await_condition;

use super::Site;
use crate::cluster::Cluster;
use crate::config;
use crate::remote::{Remote, Tunnel};
use crate::secret::SecretText;
use crate::vault::{SealStatus, UnsealProgress, VaultClient, VaultError};

/// Connecting runs over an SSH channel that is already up: seconds mean it is not coming.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole request: init and the last unseal share make Vault write to its storage.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A Vault client and the tunnel it talks through (closed when this is dropped).
pub struct VaultTunnel {
    pub client: VaultClient,
    _tunnel: Tunnel,
}

impl VaultTunnel {
    /// Opens a tunnel to the Service `vault.namespace/vault.service` and a client over it.
    pub async fn open(
        remote: &Remote,
        cluster: &Cluster,
        vault: &config::Vault,
    ) -> Result<VaultTunnel> {
        let ip = cluster.service_ip(&vault.namespace, &vault.service).await?;
        let tunnel = remote.tunnel(&ip, vault.port).await?;
        let client = VaultClient::builder(format!("http://{}", tunnel.local_addr))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(VaultTunnel {
            client,
            _tunnel: tunnel,
        })
    }
}

/// What an unseal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsealed {
    /// Vault was unsealed already; no share was sent.
    Already(u32),
    /// The shares unsealed it.
    Now(u32),
}

impl Unsealed {
    /// Vault's threshold, as it answered.
    pub fn threshold(self) -> u32 {
        match self {
            Unsealed::Already(t) | Unsealed::Now(t) => t,
        }
    }
}

/// One line of unseal progress: `unseal progress 1/3`, or `…: Vault unsealed` after the last
/// share (Vault resets its progress to 0 once unsealed, so the last step shows the threshold).
pub fn progress_line(p: &UnsealProgress) -> String {
    if p.sealed {
        format!("unseal progress {}/{}", p.progress, p.threshold)
    } else {
        format!(
            "unseal progress {}/{}: Vault unsealed",
            p.threshold, p.threshold
        )
    }
}

/// The refusal to unseal a Vault that was never initialised.
pub fn not_initialised() -> anyhow::Error {
    anyhow::anyhow!(crate::next::hinted(
        "Vault is not initialised: there is nothing to unseal",
        "`rebox rebuild` initialises a fresh Vault"
    ))
}

impl Site {
    /// Unseals Vault with `shares` (from `source`, e.g. "the offline backup FILE", for
    /// messages), calling `progress` after each accepted share. Nothing is sent to a Vault that
    /// is not initialised or already unsealed, nor when there are fewer shares than its
    /// threshold; a refused key leaves Vault sealed with no partial attempt.
    pub async fn unseal(
        &self,
        shares: &[SecretText],
        source: &str,
        progress: impl FnMut(UnsealProgress),
    ) -> Result<Unsealed> {
        let vault = self.vault().await?;
        let before = vault.seal_status().await?;
        if !before.initialized {
            return Err(not_initialised());
        }
        if !before.sealed {
            return Ok(Unsealed::Already(before.threshold));
        }
        if (shares.len() as u32) < before.threshold {
            bail!(
                "{source} holds {} share(s) but Vault needs {}; nothing was submitted",
                shares.len(),
                before.threshold
            );
        }
        let after = vault
            .unseal_all(shares, progress)
            .await
            .with_context(|| format!("Vault refused the key from {source}; it stays sealed"))?;
        if after.sealed {
            bail!("Vault is still sealed after every share from {source} was given");
        }
        Ok(Unsealed::Now(after.threshold))
    }

    /// Whether `shares` unseal this sealed Vault: a wrong key or too few shares is `false`
    /// (and leaves no partial attempt), any other failure an error.
    pub async fn try_unseal(&self, shares: &[SecretText]) -> Result<bool> {
        match self.vault().await?.unseal_all(shares, |_| {}).await {
            Ok(s) => Ok(!s.sealed),
            Err(e) if e.is_bad_key() => Ok(false),
            Err(VaultError::NotEnoughShares { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits up to `deadline` for the Vault pod to turn Ready (its readiness probe is `vault
    /// status`: Ready once unsealed); false when it did not.
    pub async fn vault_pod_ready(&self, deadline: Duration) -> Result<bool> {
        let v = &self.config.vault;
        let pods: kube::Api<Pod> =
            kube::Api::namespaced(self.cluster().await?.client.clone(), &v.namespace);
        let ready = |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        match tokio::time::timeout(deadline, await_condition(pods, &v.pod, ready)).await {
            Ok(r) => {
                r.with_context(|| format!("watching pod {}/{}", v.namespace, v.pod))?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Vault's seal status, as a line for reports when it cannot be read.
    pub async fn seal_status(&self) -> Result<SealStatus, String> {
        match self.vault().await {
            Err(e) => Err(format!("{e:#}")),
            Ok(v) => v
                .seal_status()
                .await
                .map_err(|e| e.to_string().replace('\n', " ")),
        }
    }
}
