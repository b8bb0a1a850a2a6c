//! The homelab side of a rotation: one SSH connection carrying the cluster client (for the
//! Secret and the Vault Service's address) and a tunnel to Vault; the Vault calls that a
//! rotation strings together (give the current key, verify the new one, probe which key is
//! active); the unseal key Secret read and written with the key only in request bodies.

use anyhow::{bail, Context, Result};
use zeroize::Zeroize;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::keys::source::parse_shares;
use crate::keys::SecretText;
use crate::remote::{HostKeyPolicy, Remote, Target, Tunnel};
use crate::vault::{RekeyKeys, RekeyUpdate, VaultClient, VaultError, VerifyUpdate};

/// Connections to the homelab for one run.
pub struct Site {
    pub config: Config,
    pub remote: Remote,
    pub cluster: Cluster,
    pub vault: VaultClient,
    _tunnel: Tunnel,
}

impl Site {
    pub async fn connect(config: Config, target: Target, policy: HostKeyPolicy) -> Result<Site> {
        let remote = Remote::connect(target, policy).await?;
        let cluster = Cluster::connect(&remote).await?;
        let (ns, name) = (&config.vault.namespace, &config.vault.service);
        let api: kube::Api<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(cluster.client.clone(), ns);
        let svc = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading Service {ns}/{name}"))?
            .with_context(|| {
                format!("there is no Service {ns}/{name}: is Vault installed? (`rebox status`)")
            })?;
        let ip = svc
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.clone())
            .filter(|ip| !ip.is_empty() && ip != "None")
            .with_context(|| format!("Service {ns}/{name} has no cluster IP"))?;
        let tunnel = remote.tunnel(&ip, config.vault.port).await?;
        let vault = VaultClient::new(format!("http://{}", tunnel.local_addr))?;
        Ok(Site {
            config,
            remote,
            cluster,
            vault,
            _tunnel: tunnel,
        })
    }

    /// `security/vault-unseal-key`, for messages.
    pub fn secret_name(&self) -> String {
        format!(
            "{}/{}",
            self.config.vault.namespace, self.config.vault.unseal_secret
        )
    }

    /// The shares in the unseal key Secret, or None when the Secret (or its key) is missing.
    pub async fn read_secret(&self) -> Result<Option<Vec<SecretText>>> {
        let v = &self.config.vault;
        let Some(raw) = self
            .cluster
            .secret_value(&v.namespace, &v.unseal_secret, &v.unseal_secret_key)
            .await?
        else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&raw).map_err(|_| {
            anyhow::anyhow!(
                "Secret {} key `{}` is not text",
                self.secret_name(),
                v.unseal_secret_key
            )
        })?;
        let shares = parse_shares(text)
            .with_context(|| format!("Secret {} does not hold key shares", self.secret_name()))?;
        Ok(Some(shares))
    }

    /// Puts `shares` in the unseal key Secret (server-side apply; the key only in the body),
    /// then reads it back and checks the fingerprints.
    pub async fn write_secret(&self, shares: &[SecretText]) -> Result<()> {
        let texts: Vec<&str> = shares.iter().map(|s| s.expose()).collect();
        let mut secret = crate::manifests::unseal_key_secret(&self.config, &texts);
        let applied = self.cluster.apply_all(std::slice::from_ref(&secret)).await;
        // Wipe the base64 copy of the key held in the JSON value.
        if let Some(serde_json::Value::Object(data)) = secret.get_mut("data") {
            for (_, v) in data.iter_mut() {
                if let serde_json::Value::String(s) = v {
                    s.zeroize();
                }
            }
        }
        applied.with_context(|| format!("writing Secret {}", self.secret_name()))?;
        let back = self.read_secret().await?.unwrap_or_default();
        if fingerprints(&back) != fingerprints(shares) {
            bail!(
                "Secret {} does not hold the key just written (something else changed it?)",
                self.secret_name()
            );
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.remote.close().await;
    }
}

/// SHA-256 fingerprints of shares, sorted (a key is a set of shares).
pub fn fingerprints(shares: &[SecretText]) -> Vec<String> {
    let mut f: Vec<String> = shares.iter().map(|s| s.sha256_hex()).collect();
    f.sort();
    f
}

/// Gives the CURRENT key's shares to the rekey `nonce` until Vault answers with the new key.
pub async fn give_current_key(
    vault: &VaultClient,
    nonce: &str,
    shares: &[SecretText],
) -> Result<RekeyKeys, VaultError> {
    let mut progress = 0;
    let mut required = 0;
    for share in shares {
        match vault.rekey_update(share, nonce).await {
            Ok(RekeyUpdate::Complete(keys)) => return Ok(keys),
            Ok(RekeyUpdate::Progress(s)) => {
                progress = s.progress;
                required = s.required;
            }
            Err(VaultError::DuplicateShare) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(VaultError::NotEnoughShares {
        given: progress,
        threshold: required,
    })
}

/// Completes the verification of the NEW key: from the first `Ok` on, only it opens Vault.
pub async fn verify_new_key(vault: &VaultClient, shares: &[SecretText]) -> Result<(), VaultError> {
    let mut status = vault.rekey_verify_status().await?;
    if status.progress > 0 {
        // Shares of an interrupted attempt: start the verification afresh.
        status = vault.rekey_verify_restart().await?;
    }
    for share in shares {
        match vault.rekey_verify(share, &status.nonce).await {
            Ok(VerifyUpdate::Complete { .. }) => return Ok(()),
            Ok(VerifyUpdate::Progress(s)) => status = s,
            Err(VaultError::DuplicateShare) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(VaultError::NotEnoughShares {
        given: status.progress,
        threshold: status.threshold,
    })
}

/// Whether `shares` is the key that opens this (unsealed) Vault now, found out without
/// changing anything: a rekey is started, the shares are given as the current key, and the
/// rekey is cancelled whatever the answer (cancelling keeps the current key, facts card §1).
///
/// `on_start` gets the probe rekey's nonce before any share is given (the caller records it,
/// so that a rerun after a crash mid-probe recognises the leftover rekey as its own).
pub async fn probe(
    vault: &VaultClient,
    shares: &[SecretText],
    on_start: impl FnOnce(&str) -> Result<()>,
) -> Result<bool> {
    let status = vault.seal_status().await?;
    let started = vault
        .rekey_init(status.shares.max(1), status.threshold.max(1), true)
        .await?;
    if let Err(e) = on_start(&started.nonce) {
        let _ = vault.rekey_cancel(&started.nonce).await;
        return Err(e);
    }
    let required = started.required.max(1) as usize;
    let answer = if shares.len() < required {
        // Too few shares for the current threshold: this cannot be the current key.
        Ok(false)
    } else {
        match give_current_key(vault, &started.nonce, shares).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_bad_key() => Ok(false),
            Err(VaultError::NotEnoughShares { .. }) => Ok(false),
            Err(e) => Err(anyhow::Error::from(e)),
        }
    };
    vault
        .rekey_cancel(&started.nonce)
        .await
        .context("cancelling the probe rekey")?;
    answer
}
