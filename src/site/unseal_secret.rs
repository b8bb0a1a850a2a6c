//! The Secret `vault-unseal-key` (names from `[vault]` in rebox.toml): the one place it is read
//! and written. The value is one share per line, the format the auto-unseal CronJob reads.
//!
//! Every write goes through server-side apply with the key only in the request body, wipes the
//! base64 copy the JSON body held, and reads the Secret back to compare fingerprints. Every read
//! keeps the value in zeroizing buffers and wipes the Secret's other values too.

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Secret;
use zeroize::{Zeroize, Zeroizing};

use super::Site;
use crate::config::Config;
use crate::keys::input::parse_shares;
use crate::remote::{HostKeyPolicy, Target};
use crate::secret::SecretText;

/// What the Secret holds.
#[derive(Debug)]
pub enum Stored {
    /// The shares in its key field (possibly none, if the field is empty).
    Shares(Vec<SecretText>),
    /// The Secret exists but has no such key field.
    NoKey,
    /// There is no such Secret.
    NoSecret,
}

impl Stored {
    /// The shares, or None when the Secret or its key field is missing.
    pub fn shares(self) -> Option<Vec<SecretText>> {
        match self {
            Stored::Shares(s) => Some(s),
            Stored::NoKey | Stored::NoSecret => None,
        }
    }
}

/// The unseal Secret as the checks see it: key names and a share count, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// Names of the keys in `data`.
    pub keys: Vec<String>,
    /// Shares in the configured key field (non-empty lines), or why they do not parse.
    pub shares: Option<Result<usize, String>>,
}

impl SecretInfo {
    /// Reduces a Secret to key names and the share count of `key` (the value is dropped here).
    pub fn from_secret(secret: Secret, key: &str) -> SecretInfo {
        let mut keys = Vec::new();
        let mut shares = None;
        for (k, v) in secret.data.unwrap_or_default() {
            // Every value is wiped when dropped here, not only the key's.
            let bytes = Zeroizing::new(v.0);
            if k == key {
                shares = Some(parse_value(&bytes).map(|s| s.len()));
            }
            keys.push(k);
        }
        SecretInfo { keys, shares }
    }
}

/// The shares in a value of the Secret; the error never holds the value.
fn parse_value(bytes: &[u8]) -> Result<Vec<SecretText>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not text".to_string())?;
    parse_shares(text).map_err(|e| e.to_string())
}

/// SHA-256 fingerprints of shares, sorted (a key is a set of shares).
pub fn fingerprints(shares: &[SecretText]) -> Vec<String> {
    let mut f: Vec<String> = shares.iter().map(|s| s.sha256_hex()).collect();
    f.sort();
    f
}

impl Site {
    /// `security/vault-unseal-key`, for messages.
    pub fn unseal_secret_name(&self) -> String {
        format!(
            "{}/{}",
            self.config.vault.namespace, self.config.vault.unseal_secret
        )
    }

    /// Reads the unseal Secret. Errors name the Secret and key; they never hold the value.
    pub async fn read_unseal_secret(&self) -> Result<Stored> {
        let v = &self.config.vault;
        let api: kube::Api<Secret> =
            kube::Api::namespaced(self.cluster().await?.client.clone(), &v.namespace);
        let Some(mut secret) = api
            .get_opt(&v.unseal_secret)
            .await
            .with_context(|| format!("reading Secret {}", self.unseal_secret_name()))?
        else {
            return Ok(Stored::NoSecret);
        };
        let mut data = secret.data.take().unwrap_or_default();
        let value = data
            .remove(&v.unseal_secret_key)
            .map(|b| Zeroizing::new(b.0));
        for (_, mut other) in data {
            other.0.zeroize();
        }
        let Some(value) = value else {
            return Ok(Stored::NoKey);
        };
        tracing::debug!(secret = %self.unseal_secret_name(), key = %v.unseal_secret_key, bytes = value.len(), "read the unseal key Secret");
        let shares = parse_value(&value).map_err(|why| {
            anyhow::anyhow!(
                "Secret {} key `{}` {why}; expected the unseal key share(s), one per line",
                self.unseal_secret_name(),
                v.unseal_secret_key
            )
        })?;
        Ok(Stored::Shares(shares))
    }

    /// The unseal Secret reduced to key names and a share count (None: no such Secret).
    pub async fn unseal_secret_info(&self) -> Result<Option<SecretInfo>> {
        let v = &self.config.vault;
        let api: kube::Api<Secret> =
            kube::Api::namespaced(self.cluster().await?.client.clone(), &v.namespace);
        let secret = api
            .get_opt(&v.unseal_secret)
            .await
            .with_context(|| format!("reading Secret {}", self.unseal_secret_name()))?;
        Ok(secret.map(|s| SecretInfo::from_secret(s, &v.unseal_secret_key)))
    }

    /// The shares in the unseal Secret; a missing Secret, key field or share is an error that
    /// says which (the fixes differ).
    pub async fn require_unseal_secret(&self) -> Result<Vec<SecretText>> {
        let (name, key) = (
            self.unseal_secret_name(),
            &self.config.vault.unseal_secret_key,
        );
        match self.read_unseal_secret().await? {
            Stored::Shares(s) if !s.is_empty() => Ok(s),
            Stored::Shares(_) => bail!("Secret {name} key `{key}` is empty"),
            Stored::NoKey => bail!(
                "Secret {name} has no key `{key}`: is this the right cluster, and is \
                 `vault.unseal_secret_key` in rebox.toml right? `rebox doctor` checks it"
            ),
            Stored::NoSecret => bail!(
                "there is no Secret {name} in the cluster: is this the right cluster, and are \
                 `vault.namespace` / `vault.unseal_secret` in rebox.toml right? `rebox doctor` \
                 checks it"
            ),
        }
    }

    /// Whether the unseal Secret holds exactly `shares` (by fingerprint, in any order).
    pub async fn unseal_secret_holds(&self, shares: &[SecretText]) -> Result<bool> {
        let stored = self
            .read_unseal_secret()
            .await?
            .shares()
            .unwrap_or_default();
        Ok(fingerprints(&stored) == fingerprints(shares))
    }

    /// Puts `shares` in the unseal Secret (server-side apply; the key only in the body), then
    /// reads it back and checks the fingerprints.
    pub async fn write_unseal_secret(&self, shares: &[SecretText]) -> Result<()> {
        let texts: Vec<&str> = shares.iter().map(|s| s.expose()).collect();
        let mut secret = crate::manifests::unseal_key_secret(&self.config, &texts);
        let applied = match self.cluster().await {
            Ok(cluster) => cluster.apply_all(std::slice::from_ref(&secret)).await,
            Err(e) => Err(e),
        };
        // Wipe the base64 copy of the key held in the JSON value.
        if let Some(serde_json::Value::Object(data)) = secret.get_mut("data") {
            for (_, v) in data.iter_mut() {
                if let serde_json::Value::String(s) = v {
                    s.zeroize();
                }
            }
        }
        applied.with_context(|| format!("writing Secret {}", self.unseal_secret_name()))?;
        if !self.unseal_secret_holds(shares).await? {
            bail!(
                "Secret {} does not hold the key just written (something else changed it?)",
                self.unseal_secret_name()
            );
        }
        Ok(())
    }
}

/// Where the unseal Secret is, before connecting: what `rebox key` reads once and names in
/// its messages.
#[derive(Debug, Clone)]
pub struct SecretLocation {
    pub config: Config,
    pub target: Target,
    pub policy: HostKeyPolicy,
}

impl SecretLocation {
    /// `security/vault-unseal-key`.
    pub fn describe(&self) -> String {
        format!(
            "{}/{}",
            self.config.vault.namespace, self.config.vault.unseal_secret
        )
    }

    /// The key field of the Secret that holds the shares.
    pub fn key(&self) -> &str {
        &self.config.vault.unseal_secret_key
    }

    /// Connects over SSH, reads the Secret through the tunnel to the k3s API, disconnects.
    pub async fn read(&self) -> Result<Vec<SecretText>> {
        let site = Site::connect(
            self.config.clone(),
            self.target.clone(),
            self.policy.clone(),
        )
        .await?;
        let result = site.require_unseal_secret().await;
        site.close().await;
        result
    }
}
