//! The Vault calls that a rotation strings together: give the current key to a rekey, verify
//! the new one, and probe which key is active without changing anything.

use anyhow::{Context, Result};

use crate::secret::SecretText;
use crate::vault::{RekeyKeys, RekeyUpdate, VaultClient, VaultError, VerifyUpdate};

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
