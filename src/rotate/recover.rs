//! The recovery of an interrupted rotation: from the journal and Vault's state, find which
//! key opens Vault, then finish the rotation (the new key is or can still become active) or
//! roll it back (the current key is still the only one).

use anyhow::{anyhow, bail, Context, Result};

use super::journal::{self, Journal, Step};
use super::{
    fingerprints, initialized_status, new_backup_path, recovery_failpoint, rekey, stamped,
    sync_parent, Active, Recovered, Rotation,
};
use crate::secret::SecretText;
use crate::vault::{RekeyStatus, VaultClient, VaultError};

impl Rotation<'_> {
    /// Finishes or rolls back the rotation the journal describes.
    pub(super) async fn recover(&mut self, mut j: Journal) -> Result<Recovered> {
        self.default_to_journal_files(&j);
        let vault = self.site.vault().await?.clone();
        let status = initialized_status(&vault).await?;
        let active = if status.sealed {
            self.find_active_key_when_sealed(&j).await?
        } else if j.step == Step::Verified {
            // Vault verified the new key: nothing to ask it (a rekey someone started since
            // then is theirs to finish).
            Active::New
        } else {
            let rekey = self.rekey_in_progress(&vault, &j).await?;
            if is_ours(&j, &rekey) {
                if rekey.verification_nonce.is_some() && !j.new_shares.is_empty() {
                    return self.finish_pending_rekey(j).await;
                }
                // Started but its new key was never saved: nothing to finish.
                self.say("cancelling the rekey of the interrupted rotation (its new key was never saved)");
                vault.rekey_cancel(&rekey.nonce).await?;
                Active::Old
            } else {
                if rekey.started {
                    self.cancel_rekey_not_ours(&vault, &rekey).await?;
                }
                self.find_active_key_when_rekey_gone(&mut j).await?
            }
        };
        match active {
            Active::New => self.finish_with_new_key(j).await,
            Active::Old => self.roll_back(j).await.map(Recovered::RolledBack),
        }
    }

    /// A restart after a roll-back uses the files of the interrupted rotation unless told
    /// otherwise.
    fn default_to_journal_files(&mut self, j: &Journal) {
        if self.from.is_none() {
            self.from = j.from.clone();
        }
        if self.output.is_none() {
            self.output = Some(new_backup_path(j).to_path_buf());
        }
    }

    /// A seal drops a pending rekey: whichever key unseals Vault is the active one.
    async fn find_active_key_when_sealed(&self, j: &Journal) -> Result<Active> {
        self.say("Vault is sealed: the interrupted rekey is gone; finding which key opens Vault");
        let order = if j.step >= Step::SecretUpdated && !j.new_shares.is_empty() {
            vec![Active::New, Active::Old]
        } else if !j.new_shares.is_empty() {
            vec![Active::Old, Active::New]
        } else {
            vec![Active::Old]
        };
        let mut found = None;
        for which in order {
            let shares = match which {
                Active::Old => &j.old_shares,
                Active::New => &j.new_shares,
            };
            if self.site.try_unseal(shares).await? {
                found = Some(which);
                break;
            }
        }
        let which = found.ok_or_else(|| {
            anyhow!(crate::next::hinted("Vault is sealed and neither the current nor the new key of the interrupted rotation opens it; nothing was changed", format!("unseal it with the offline backup that belongs to it; the journal {} is kept", self.journal_path.display())))
        })?;
        self.say(&format!(
            "Vault unsealed with the {} key",
            if which == Active::Old {
                "current (old)"
            } else {
                "new"
            }
        ));
        Ok(which)
    }

    /// Vault's rekey status, once a probe rekey an interrupted run left behind is cancelled.
    async fn rekey_in_progress(&self, vault: &VaultClient, j: &Journal) -> Result<RekeyStatus> {
        let mut rekey = vault.rekey_status().await?;
        if rekey.started && j.probe_nonce.as_deref() == Some(rekey.nonce.as_str()) {
            self.say("cancelling the probe rekey an interrupted run left behind");
            vault.rekey_cancel(&rekey.nonce).await?;
            rekey = vault.rekey_status().await?;
        }
        Ok(rekey)
    }

    /// The rekey of the interrupted rotation still waits for verification: finish it.
    async fn finish_pending_rekey(&mut self, j: Journal) -> Result<Recovered> {
        self.say(&format!(
            "the rekey of the interrupted rotation still waits for verification; finishing it from step `{}`",
            j.step.name()
        ));
        let report = self.advance(j, true).await?;
        Ok(Recovered::Finished(Box::new(report)))
    }

    /// A rekey this rotation did not start is in the way: cancelled with --cancel-existing,
    /// else nothing is changed.
    async fn cancel_rekey_not_ours(&self, vault: &VaultClient, rekey: &RekeyStatus) -> Result<()> {
        if !self.settings.cancel_existing {
            return Err(VaultError::RekeyInProgress {
                url: vault.url().into(),
                nonce: Some(rekey.nonce.clone()),
                verification_pending: rekey.verification_nonce.is_some(),
            })
            .context(crate::next::hinted(format!("an interrupted rotation (journal {}) waits to be finished, but a rekey it did not start is in progress; nothing was changed", self.journal_path.display()), "pass --cancel-existing to cancel that rekey"));
        }
        self.say(&format!(
            "cancelling a rekey this rotation did not start (nonce {}), as --cancel-existing asks",
            rekey.nonce
        ));
        vault.rekey_cancel(&rekey.nonce).await?;
        Ok(())
    }

    /// No rekey of the interrupted rotation is in Vault (never started, or gone with a
    /// restart): the journal's step says which key is active, else Vault is asked.
    async fn find_active_key_when_rekey_gone(&self, j: &mut Journal) -> Result<Active> {
        let active = match j.step {
            // Verification starts only after `secret-updated` is recorded.
            s if s < Step::SecretUpdated => Active::Old,
            Step::Verified => Active::New,
            _ => {
                self.say("the rekey is gone from Vault (restarted or sealed?); asking Vault which key it accepts");
                if self.probe(j, Active::New).await? {
                    Active::New
                } else if self.probe(j, Active::Old).await? {
                    Active::Old
                } else {
                    bail!(crate::next::hinted("Vault accepts neither the current nor the new key of the interrupted rotation; nothing was changed", format!("check that rebox talks to the right Vault; the journal {} is kept", self.journal_path.display())));
                }
            }
        };
        Ok(active)
    }

    /// The new key is the active one: record it as verified and finish.
    async fn finish_with_new_key(&mut self, mut j: Journal) -> Result<Recovered> {
        self.say("the new key is the active key; finishing the rotation");
        if j.step < Step::Verified {
            self.record_step(&mut j, Step::Verified)?;
        }
        let report = self.finish(j, true).await?;
        Ok(Recovered::Finished(Box::new(report)))
    }

    /// Whether the old or the new key of `j` is the one Vault accepts (see `rekey::probe`);
    /// the probe's nonce is in the journal while the probe runs.
    async fn probe(&self, j: &mut Journal, which: Active) -> Result<bool> {
        let shares = match which {
            Active::Old => j.old_shares.clone(),
            Active::New => j.new_shares.clone(),
        };
        let vault = self.site.vault().await?.clone();
        let answer = rekey::probe(&vault, &shares, |nonce| {
            j.probe_nonce = Some(nonce.to_string());
            self.save(j)?;
            recovery_failpoint("rotate-probe-started");
            Ok(())
        })
        .await?;
        j.probe_nonce = None;
        self.save(j)?;
        Ok(answer)
    }

    /// The current (old) key is still the active one: the Secret gets it back, a new backup
    /// that never became active is renamed as such, the journal is removed.
    async fn roll_back(&mut self, j: Journal) -> Result<String> {
        let mut done = vec![
            "the interrupted rotation was rolled back (its new key never became active)"
                .to_string(),
        ];
        let in_secret = self.site.read_unseal_secret().await?.shares();
        let secret_ok = in_secret
            .as_ref()
            .is_some_and(|s| fingerprints(s) == fingerprints(&j.old_shares));
        if !secret_ok && (j.secret_existed || in_secret.is_some()) {
            self.site.write_unseal_secret(&j.old_shares).await?;
            done.push(format!(
                "Secret {} holds the current key again",
                self.site.unseal_secret_name()
            ));
        }
        if j.output.exists() && !j.new_shares.is_empty() {
            let ours = self
                .keys
                .open_backup(&j.output)
                .map(|d| {
                    let s: Vec<SecretText> = d.shares();
                    fingerprints(&s) == fingerprints(&j.new_shares)
                })
                .unwrap_or(false);
            if ours {
                let to = stamped(new_backup_path(&j), "never-activated");
                std::fs::rename(&j.output, &to).with_context(|| {
                    format!("renaming {} as never activated", j.output.display())
                })?;
                sync_parent(&to);
                done.push(format!(
                    "{} was renamed {}",
                    j.output.display(),
                    to.display()
                ));
            }
        }
        journal::remove(&self.journal_path)?;
        Ok(done.join("; "))
    }
}

/// Whether the rekey in progress is the interrupted rotation's: its nonce is in the journal,
/// or (stopped before the nonce was recorded) it requires verification and has the shape the
/// journal asked for.
fn is_ours(j: &Journal, rekey: &RekeyStatus) -> bool {
    rekey.started
        && (j.rekey_nonce.as_deref() == Some(rekey.nonce.as_str())
            || (j.step == Step::Initiating
                && rekey.verification_required
                && rekey.threshold == j.new_threshold
                && rekey.shares == j.new_share_count))
}
