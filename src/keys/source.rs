//! Where `rebox key export` (and `verify --against-cluster`) gets the unseal key from.
//!
//! - standard input: a pipe, or pasted on the terminal without echo;
//! - the cluster: the Secret `vault.unseal_secret` (key `vault.unseal_secret_key`) in
//!   namespace `vault.namespace` of rebox.toml, read with the cluster client through the
//!   SSH connection. The value is one share per line, the format the unseal CronJob reads.

use std::io::{IsTerminal, Read};

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use super::passphrase;
use super::secret::SecretText;
use crate::config::Config;
use crate::remote::{HostKeyPolicy, Remote, Target};

/// Largest key input accepted on stdin; Vault shares are tens of bytes each.
const MAX_STDIN_BYTES: u64 = 64 * 1024;

/// A source of unseal key shares.
#[derive(Debug)]
pub enum KeySource {
    /// One share per line on standard input.
    Stdin,
    /// The cluster's Secret, read through the SSH connection.
    Cluster(Box<ClusterSecret>),
}

/// Where the unseal key lives in the cluster, and how to reach the cluster.
#[derive(Debug, Clone)]
pub struct ClusterSecret {
    pub target: Target,
    pub policy: HostKeyPolicy,
    pub namespace: String,
    pub name: String,
    pub key: String,
}

impl ClusterSecret {
    /// The Secret named by the `[vault]` table of rebox.toml, on the configured server.
    pub fn from_config(config: &Config, target: Target, policy: HostKeyPolicy) -> Self {
        ClusterSecret {
            target,
            policy,
            namespace: config.vault.namespace.clone(),
            name: config.vault.unseal_secret.clone(),
            key: config.vault.unseal_secret_key.clone(),
        }
    }

    /// `security/vault-unseal-key`, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Connects over SSH, reads the Secret through the tunnel to the k3s API and parses its
    /// value (one share per line). Errors name what is missing and what to do next; they
    /// never contain the value.
    pub async fn read(&self) -> Result<Vec<SecretText>> {
        let remote = Remote::connect(self.target.clone(), self.policy.clone()).await?;
        let result = self.read_with(&remote).await;
        remote.close().await;
        result
    }

    async fn read_with(&self, remote: &Remote) -> Result<Vec<SecretText>> {
        let cluster = crate::cluster::Cluster::connect(remote).await?;
        let (ns, name, key) = (&self.namespace, &self.name, &self.key);
        let value = cluster.secret_value(ns, name, key).await?;
        let Some(raw) = value else {
            // Tell a missing Secret from a missing key: the fixes differ.
            let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                kube::Api::namespaced(cluster.client.clone(), ns);
            let exists = api
                .get_metadata_opt(name)
                .await
                .map(|m| m.is_some())
                .unwrap_or(false);
            if exists {
                bail!(
                    "Secret {ns}/{name} has no key `{key}`: is this the right cluster, and is \
                     `vault.unseal_secret_key` in rebox.toml right? `rebox doctor` checks it"
                );
            }
            bail!(
                "there is no Secret {ns}/{name} in the cluster: is this the right cluster, and \
                 are `vault.namespace` / `vault.unseal_secret` in rebox.toml right? `rebox doctor` \
                 checks it; for a key you hold yourself, use --from-stdin"
            );
        };
        tracing::debug!(secret = %format!("{ns}/{name}"), key = %key, bytes = raw.len(), "read the unseal key Secret");
        let text = std::str::from_utf8(&raw).map_err(|_| {
            anyhow::anyhow!("Secret {ns}/{name} key `{key}` is not text; expected the unseal key share(s), one per line")
        })?;
        let shares = parse_shares(text).with_context(|| {
            format!("Secret {ns}/{name} key `{key}` does not hold unseal key shares")
        })?;
        if shares.is_empty() {
            bail!("Secret {ns}/{name} key `{key}` is empty; `rebox doctor` checks the unseal key Secret");
        }
        Ok(shares)
    }
}

impl KeySource {
    /// Reads the shares. Each is checked to look like a share; errors never echo the input.
    pub async fn read(self) -> Result<Vec<SecretText>> {
        let shares = match self {
            KeySource::Cluster(c) => return c.read().await,
            KeySource::Stdin if std::io::stdin().is_terminal() => passphrase::ask_shares()?,
            KeySource::Stdin => {
                let mut raw = Zeroizing::new(Vec::with_capacity(MAX_STDIN_BYTES as usize + 1));
                std::io::stdin()
                    .take(MAX_STDIN_BYTES + 1)
                    .read_to_end(&mut raw)
                    .context("reading the key from standard input")?;
                if raw.len() as u64 > MAX_STDIN_BYTES {
                    bail!("standard input is larger than {MAX_STDIN_BYTES} bytes; that is not an unseal key");
                }
                let text = std::str::from_utf8(&raw)
                    .map_err(|_| anyhow::anyhow!("standard input is not text; expected the unseal key share(s), one per line"))?;
                parse_shares(text)?
            }
        };
        if shares.is_empty() {
            bail!("no unseal key on standard input; pipe it in, one share per line");
        }
        Ok(shares)
    }
}

/// Splits text into shares: one per line, blank lines ignored, and the `Unseal Key N: `
/// prefix of `vault operator init` output accepted so that output can be pasted as is.
pub fn parse_shares(text: &str) -> Result<Vec<SecretText>> {
    let mut shares = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut s = line.trim();
        if s.is_empty() {
            continue;
        }
        if let Some(rest) = s.strip_prefix("Unseal Key ") {
            if let Some((num, key)) = rest.split_once(':') {
                if num.trim().chars().all(|c| c.is_ascii_digit()) {
                    s = key.trim();
                }
            }
        }
        if s.is_empty()
            || !s.is_ascii()
            || s.chars()
                .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            bail!(
                "line {} of the key input is not an unseal key share (it contains spaces or \
                 unusual characters); give one share per line, nothing else",
                n + 1
            );
        }
        shares.push(SecretText::new(s.to_owned()));
    }
    Ok(shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shares_parse_one_per_line_and_vault_init_output() {
        let s = parse_shares("abc\n\n  def  \nUnseal Key 3: ghi\n").unwrap();
        let got: Vec<&str> = s.iter().map(|s| s.expose()).collect();
        assert_eq!(got, ["abc", "def", "ghi"]);
    }

    #[test]
    fn key_shares_with_spaces_are_refused_without_echo() {
        let err = parse_shares("Initial Root Token: hvs.secretvalue\n").unwrap_err();
        assert!(!err.to_string().contains("hvs.secretvalue"));
    }
}
