//! The manual unseal of the guide's scenario 2 (`rebox unseal`): through the SSH tunnel to
//! Vault's Service, with the key from the offline backup (decrypted on the laptop) or from the
//! cluster's Secret, share by share; then vault-0's readiness.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::secret::SecretText;
use crate::site::vault::not_initialised;
use crate::site::{progress_line, Site};

/// How long to wait for vault-0 to turn Ready after the unseal.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// What the unseal did (`--json` prints it as is; it holds no secret).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sealed: bool,
    pub progress: u32,
    pub threshold: u32,
    /// Where the key came from; empty when none was needed.
    pub key_source: String,
    pub note: String,
}

/// Unseals Vault with `from_backup` (shares and a description), else with the Secret's key.
pub async fn unseal(site: &Site, from_backup: Option<(Vec<SecretText>, String)>) -> Result<Report> {
    let status = site
        .vault()
        .await
        .context(crate::next::hinted(
            "cannot reach Vault through the SSH tunnel",
            "`rebox doctor` checks vault-0 and its volume",
        ))?
        .seal_status()
        .await?;
    if !status.initialized {
        return Err(not_initialised());
    }
    if !status.sealed {
        return Ok(Report {
            sealed: false,
            progress: 0,
            threshold: status.threshold,
            key_source: String::new(),
            note: "Vault is already unsealed; nothing to do".into(),
        });
    }
    let (shares, source) = match from_backup {
        Some(s) => s,
        None => {
            let shares = site
                .require_unseal_secret()
                .await
                .context(crate::next::hinted(
                    "the Secret cannot give the key",
                    "`rebox unseal --from vault-key.age -i IDENTITY` with the offline backup",
                ))?;
            (shares, format!("Secret {}", site.unseal_secret_name()))
        }
    };
    eprintln!(
        "unsealing Vault ({} of {} share(s) needed) with the key from {source}",
        status.threshold, status.shares
    );
    let unsealed = site
        .unseal(&shares, &source, |p| eprintln!("  {}", progress_line(&p)))
        .await?;
    let pod = &site.config.vault.pod;
    let note = match site.vault_pod_ready(READY_DEADLINE).await {
        Ok(true) => format!("Vault unsealed with the key from {source}; {pod} is Ready"),
        _ => format!(
            "Vault unsealed with the key from {source}; {pod} is not Ready yet (see `rebox status`)"
        ),
    };
    Ok(Report {
        sealed: false,
        progress: unsealed.threshold(),
        threshold: unsealed.threshold(),
        key_source: source,
        note,
    })
}
