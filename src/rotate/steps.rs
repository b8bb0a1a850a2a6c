//! The steps of a rotation, in order: the preflight, the rekey up to the new key in the
//! journal (`Rotation::fresh`), then the tail a recovery also runs (`Rotation::advance`:
//! new backup, Secret, verification; `Rotation::finish`). Each step boundary is a
//! `failpoint` call between two steps (see the module docs of `rotate` for the order).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::journal::{self, Extra, Journal, Step};
use super::{
    failpoint, find_stamped, fingerprints, initialized_status, new_backup_path, next_steps, rekey,
    same_file, staging_name, stamped, sync_parent, Report, Rotation,
};
use crate::keys::BackupDocument;
use crate::secret::SecretText;
use crate::vault::{SealStatus, VaultClient, VaultError};

/// What the preflight settled, for the journal; nothing has changed yet.
struct Plan {
    /// Where the new backup is written (its staging name when in place).
    output: PathBuf,
    /// In place: the name the new backup takes at the end.
    final_output: Option<PathBuf>,
    current: CurrentKey,
    old_threshold: u32,
    new_threshold: u32,
    new_share_count: u32,
    /// The nonce of a rekey someone else started, cancelled first (--cancel-existing).
    to_cancel: Option<String>,
}

/// The key that opens Vault now, from the `--from` backup or the Secret.
struct CurrentKey {
    shares: Vec<SecretText>,
    /// The backup's extra secrets, carried into the new backup.
    extra: Vec<Extra>,
    cluster: String,
    /// The Secret existed when the rotation started (a roll-back restores it only then).
    secret_existed: bool,
}

impl Rotation<'_> {
    // ---------------------------------------------------------------- fresh rotation

    pub(super) async fn fresh(&mut self) -> Result<Report> {
        let vault = self.site.vault().await?.clone();
        let plan = self.preflight(&vault).await?;
        failpoint("rotate-preflight");
        if let Some(nonce) = &plan.to_cancel {
            self.say(&format!(
                "cancelling the rekey already in progress (nonce {nonce}), as --cancel-existing asks"
            ));
            vault.rekey_cancel(nonce).await?;
        }
        let mut j = self.open_journal(plan)?;
        failpoint("rotate-journal-opened");
        let nonce = self.start_rekey(&vault, &j).await?;
        failpoint("rotate-rekey-started");
        self.record_rekey(&mut j, &nonce)?;
        failpoint("rotate-rekey-recorded");
        let new_shares = self.give_current_key(&vault, &j, &nonce).await?;
        failpoint("rotate-new-key-received");
        self.record_new_key(&vault, &mut j, &nonce, new_shares)
            .await?;
        failpoint("rotate-key-journaled");
        self.advance(j, false).await
    }

    /// Everything checked before Vault or a file changes: Vault unsealed, the destination
    /// free, the current key known and enough to authorise a rekey, no rekey in the way, the
    /// new key's shape possible, and the operator's yes.
    async fn preflight(&self, vault: &VaultClient) -> Result<Plan> {
        let status = initialized_status(vault).await?;
        if status.sealed {
            bail!(crate::next::hinted("Vault is sealed; a rotation needs an unsealed Vault, and nothing was changed", "let the auto-unseal CronJob unseal it (or unseal it with the offline backup), then run this again"));
        }
        let (output, final_output) = self.new_backup_destination()?;
        let current = self.current_key().await?;
        if (current.shares.len() as u32) < status.threshold {
            bail!(crate::next::hinted(format!("the current key has {} share(s) but Vault needs {} to authorise a rekey; nothing was changed", current.shares.len(), status.threshold), format!("give --from a backup that holds at least {} shares", status.threshold)));
        }
        let to_cancel = self.rekey_in_the_way(vault).await?;
        let (new_share_count, new_threshold) = self.new_key_shape(&status)?;
        self.confirm(
            &status,
            new_threshold,
            new_share_count,
            &output,
            to_cancel.as_deref(),
        )?;
        Ok(Plan {
            output,
            final_output,
            current,
            old_threshold: status.threshold,
            new_threshold,
            new_share_count,
            to_cancel,
        })
    }

    /// Where the new backup is written, checked free and writable before Vault is touched,
    /// and (in place) the name it takes at the end.
    fn new_backup_destination(&self) -> Result<(PathBuf, Option<PathBuf>)> {
        let output = self.output.clone().ok_or_else(|| {
            anyhow!(crate::next::hinted(
                "no destination for the new offline backup",
                "pass -o NEW-FILE (e.g. on the USB stick, next to the current backup)"
            ))
        })?;
        // In place (-o is the current backup): the new backup is written under a staging name
        // and takes the name at the end, when the current one is renamed as superseded.
        let (output, final_output) = match &self.from {
            Some(from) if same_file(from, &output) => {
                let staging = staging_name(&output);
                self.say(&format!(
                    "-o is the current backup: the new one is written as {} and renamed {} once its key is active (the current file becomes *.superseded-TIME)",
                    staging.display(),
                    output.display()
                ));
                (staging, Some(output))
            }
            _ => (output, None),
        };
        // Free and writable, checked before Vault is touched.
        drop(
            crate::keys::output::Pending::create(&output, false)
                .map_err(|e| anyhow!("{e:#}\nnothing was changed"))?,
        );
        Ok((output, final_output))
    }

    /// The current key: the backup file and/or the Secret, which must agree.
    async fn current_key(&self) -> Result<CurrentKey> {
        let from_doc = match &self.from {
            Some(p) => Some(self.keys.open_current(p)?),
            None => None,
        };
        let secret = self.site.read_unseal_secret().await?.shares();
        let secret_name = self.site.unseal_secret_name();
        let (old_shares, extra, cluster) = match (&from_doc, &secret) {
            (Some(doc), secret) => {
                let shares: Vec<SecretText> =
                    doc.shares();
                match secret {
                    Some(s) if fingerprints(s) != fingerprints(&shares) => bail!(crate::next::hinted(format!("the current backup {} and Secret {secret_name} hold different keys, so it is unclear which one opens Vault; nothing was changed", self.from.as_ref().expect("from").display()), format!("compare them with `rebox key verify -i ID {} --against-cluster`; give --from the backup that opens Vault, and fix the Secret (or make a new backup with `rebox key export`) first", self.from.as_ref().expect("from").display()))),
                    Some(_) => self.say(&format!(
                        "the current key: {} (the same key as Secret {secret_name})",
                        self.from.as_ref().expect("from").display()
                    )),
                    None => self.say(&format!(
                        "warning: Secret {secret_name} does not exist; the rotation creates it with the new key"
                    )),
                }
                let extra = doc
                    .extra
                    .iter()
                    .map(|e| Extra {
                        name: e.name.clone(),
                        value: e.value.clone(),
                    })
                    .collect();
                (shares, extra, doc.cluster.clone())
            }
            (None, Some(s)) if !s.is_empty() => {
                self.say(&format!("the current key: Secret {secret_name} (no --from backup given)"));
                (s.clone(), vec![], self.site.config.cluster_name.clone())
            }
            (None, _) => bail!(crate::next::hinted(format!("no current unseal key: Secret {secret_name} is missing or empty and no --from backup was given; nothing was changed"), "pass --from CURRENT-BACKUP.age")),
        };
        Ok(CurrentKey {
            shares: old_shares,
            extra,
            cluster,
            secret_existed: secret.is_some(),
        })
    }

    /// No rekey of someone else's in the way; with --cancel-existing, the nonce of the one to
    /// cancel.
    async fn rekey_in_the_way(&self, vault: &VaultClient) -> Result<Option<String>> {
        let rekey = vault.rekey_status().await?;
        if rekey.started && !self.settings.cancel_existing {
            return Err(VaultError::RekeyInProgress {
                url: vault.url().into(),
                nonce: Some(rekey.nonce.clone()),
                verification_pending: rekey.verification_nonce.is_some(),
            })
            .context("nothing was changed; pass --cancel-existing to cancel that rekey (its new key, if any, never became active) and rotate");
        }
        Ok(rekey.started.then(|| rekey.nonce.clone()))
    }

    /// The new key's share count and threshold: the flags, else the current key's shape.
    fn new_key_shape(&self, status: &SealStatus) -> Result<(u32, u32)> {
        let new_share_count = self.settings.shares.unwrap_or(status.shares.max(1));
        let new_threshold = self.settings.threshold.unwrap_or(status.threshold.max(1));
        if new_threshold == 0 || new_threshold > new_share_count {
            bail!("--threshold {new_threshold} is impossible with {new_share_count} share(s); nothing was changed");
        }
        Ok((new_share_count, new_threshold))
    }

    /// The operator's yes to what is about to happen.
    fn confirm(
        &self,
        status: &SealStatus,
        new_threshold: u32,
        new_share_count: u32,
        output: &Path,
        to_cancel: Option<&str>,
    ) -> Result<()> {
        let question = format!(
            "Rotate the Vault unseal key on {} ({} of {} shares now, {} of {} after)? The new key goes to {} and Secret {}",
            self.server,
            status.threshold,
            status.shares,
            new_threshold,
            new_share_count,
            output.display(),
            self.site.unseal_secret_name()
        );
        let question = match to_cancel {
            Some(n) => format!("{question}. The rekey in progress (nonce {n}) is cancelled first"),
            None => question,
        };
        if !(self.ui.confirm)(&question)? {
            bail!(crate::next::hinted(
                "not confirmed; nothing was changed",
                "answer yes, or pass --yes in scripts"
            ));
        }
        Ok(())
    }

    /// The journal of this rotation, saved at step "initiating" with the current key.
    fn open_journal(&self, plan: Plan) -> Result<Journal> {
        let now = crate::flow::journal::now();
        let j = Journal {
            format: journal::FORMAT_NAME.into(),
            version: journal::FORMAT_VERSION,
            host: self.host.clone(),
            cluster: plan.current.cluster,
            started_at: now.clone(),
            updated_at: now,
            step: Step::Initiating,
            rekey_nonce: None,
            probe_nonce: None,
            from: self.from.clone(),
            output: plan.output,
            final_output: plan.final_output,
            secret_existed: plan.current.secret_existed,
            old_threshold: plan.old_threshold,
            new_threshold: plan.new_threshold,
            new_share_count: plan.new_share_count,
            old_shares: plan.current.shares,
            new_shares: vec![],
            extra: plan.current.extra,
        };
        self.save(&j)?;
        Ok(j)
    }

    /// Starts a rekey that requires verification; returns its nonce.
    async fn start_rekey(&self, vault: &VaultClient, j: &Journal) -> Result<String> {
        self.say(&format!(
            "starting a rekey that requires verification ({} of {} shares)",
            j.new_threshold, j.new_share_count
        ));
        let started = vault
            .rekey_init(j.new_share_count, j.new_threshold, true)
            .await?;
        Ok(started.nonce)
    }

    fn record_rekey(&self, j: &mut Journal, nonce: &str) -> Result<()> {
        j.rekey_nonce = Some(nonce.to_string());
        self.record_step(j, Step::RekeyStarted)
    }

    /// Gives the current key to the rekey `nonce`; returns the new key Vault made. On a
    /// failure nothing new exists: the rekey is cancelled and the journal forgotten.
    async fn give_current_key(
        &self,
        vault: &VaultClient,
        j: &Journal,
        nonce: &str,
    ) -> Result<Vec<SecretText>> {
        self.say("giving Vault the current key");
        let keys = match rekey::give_current_key(vault, nonce, &j.old_shares).await {
            Ok(k) => k,
            Err(e) => {
                // Nothing new exists: cancel, forget the journal, report.
                let cancelled = vault.rekey_cancel(nonce).await;
                let source = match &self.from {
                    Some(p) => p.display().to_string(),
                    None => format!("Secret {}", self.site.unseal_secret_name()),
                };
                let undo = match cancelled {
                    Ok(()) => {
                        journal::remove(&self.journal_path)?;
                        "the rekey was cancelled and nothing was changed: the current key, the Secret and the backups are as they were".to_string()
                    }
                    Err(c) => format!(
                        "cancelling the rekey failed too ({c}); rerun this command to clean up (the journal {} remembers it)",
                        self.journal_path.display()
                    ),
                };
                if e.is_bad_key() {
                    bail!(crate::next::hinted(format!("Vault refused the current key from {source}: it does not open this Vault; {undo}"), "check which backup belongs to this Vault (`rebox key verify -i ID FILE --against-cluster`) and pass it with --from"));
                }
                return Err(anyhow::Error::from(e).context(format!(
                    "giving the current key to the rekey failed; {undo}"
                )));
            }
        };
        if !keys.verification_required || keys.verification_nonce.is_none() {
            bail!(crate::next::hinted("Vault rotated the key without the verification step that was requested; this is not how Vault behaves (facts card §1). The new key was not saved anywhere", "stop and check which Vault rebox is talking to"));
        }
        let new_shares = keys.keys.clone();
        drop(keys);
        Ok(new_shares)
    }

    /// Saves the new key in the journal; if that fails the new key would exist in memory
    /// only, so the rekey `nonce` is cancelled (the current key stays active).
    async fn record_new_key(
        &self,
        vault: &VaultClient,
        j: &mut Journal,
        nonce: &str,
        new_shares: Vec<SecretText>,
    ) -> Result<()> {
        j.new_shares = new_shares;
        j.set_step(Step::NewKeyReceived);
        if let Err(e) = self.save(j) {
            // The new key would exist in memory only: give it up while the old key is active.
            let undo = match vault.rekey_cancel(nonce).await {
                Ok(()) => "the rekey was cancelled; the current key still opens Vault".to_string(),
                Err(c) => format!("cancelling the rekey failed too ({c}); the current key still opens Vault, and a rerun cancels the rekey"),
            };
            return Err(e.context(crate::next::hinted(
                format!(
                    "the new key could not be saved in the journal {}; {undo}",
                    self.journal_path.display()
                ),
                "fix the laptop's state directory (disk full?) and rerun",
            )));
        }
        self.say(&format!(
            "Vault made the new key ({} share(s)); it is in the encrypted journal, not active yet",
            j.new_shares.len()
        ));
        Ok(())
    }

    // ---------------------------------------------------------------- the common tail

    /// From "the new key exists and waits for verification" to the end.
    pub(super) async fn advance(&mut self, mut j: Journal, resumed: bool) -> Result<Report> {
        if j.step < Step::BackupWritten {
            self.ensure_backup(&j)?;
            failpoint("rotate-backup-written");
            self.record_step(&mut j, Step::BackupWritten)?;
            failpoint("rotate-backup-recorded");
        }
        if j.step < Step::SecretUpdated {
            self.update_secret(&j).await?;
            failpoint("rotate-secret-updated");
            self.record_step(&mut j, Step::SecretUpdated)?;
            failpoint("rotate-secret-recorded");
        }
        if j.step < Step::Verified {
            self.verify_new_key(&j).await?;
            failpoint("rotate-verified");
            self.record_step(&mut j, Step::Verified)?;
            failpoint("rotate-verified-recorded");
        }
        self.finish(j, resumed).await
    }

    /// The Secret gets the new key before it is active, so a reboot from here on finds it.
    async fn update_secret(&self, j: &Journal) -> Result<()> {
        self.say(&format!(
            "putting the new key in Secret {} (Vault still opens only with the current key)",
            self.site.unseal_secret_name()
        ));
        self.site.write_unseal_secret(&j.new_shares).await
    }

    /// Completes Vault's verification: from here on only the new key opens Vault.
    async fn verify_new_key(&self, j: &Journal) -> Result<()> {
        self.say("verifying the new key with Vault (this makes it the active key)");
        rekey::verify_new_key(self.site.vault().await?, &j.new_shares)
            .await
            .context(crate::next::hinted(
                "the verification of the new key failed; the current key still opens Vault",
                "rerun this command: it finishes or rolls back the rotation",
            ))
    }

    /// The new key is active: make sure the backup and the Secret hold it, check Vault, retire
    /// the old backup, forget the journal.
    pub(super) async fn finish(&mut self, j: Journal, resumed: bool) -> Result<Report> {
        let in_backup = self.ensure_backup(&j)?;
        self.ensure_secret_holds_new_key(&j).await?;
        let healthy = self.confirm_new_key_in_place(&j, &in_backup).await?;
        let superseded = self.retire_old_backup(&j)?;
        failpoint("rotate-old-superseded");
        journal::remove(&self.journal_path)?;
        self.say(&format!(
            "done: the new key is the only one that opens Vault, and Secret {} and {} hold it",
            self.site.unseal_secret_name(),
            new_backup_path(&j).display()
        ));
        Ok(self.report(&j, resumed, healthy, superseded))
    }

    /// The Secret holds the new key (a rerun may find it holding the old one).
    async fn ensure_secret_holds_new_key(&self, j: &Journal) -> Result<()> {
        if !self.site.unseal_secret_holds(&j.new_shares).await? {
            self.say(&format!(
                "putting the new key in Secret {}",
                self.site.unseal_secret_name()
            ));
            self.site.write_unseal_secret(&j.new_shares).await?;
        }
        Ok(())
    }

    /// Confirms the Secret's key is the new backup's key (`in_backup`, its fingerprints) and
    /// returns whether Vault answers healthy (only warned about: the rotation is complete).
    async fn confirm_new_key_in_place(&self, j: &Journal, in_backup: &[String]) -> Result<bool> {
        // Confirm: Vault healthy, the Secret's key is the new backup's key.
        let health = self.site.vault().await?.health().await?;
        let healthy = health.initialized && !health.sealed && health.code == 200;
        let in_secret = self
            .site
            .read_unseal_secret()
            .await?
            .shares()
            .unwrap_or_default();
        if fingerprints(&in_secret) != in_backup {
            bail!(crate::next::hinted(format!("after the rotation, Secret {} and {} hold different keys; the NEW key (in {}) is the one that opens Vault", self.site.unseal_secret_name(), new_backup_path(j).display(), new_backup_path(j).display()), "rerun this command to repair the Secret"));
        }
        if !healthy {
            self.say(&format!(
                "warning: Vault's health answer is {} (sealed: {}); the rotation itself is complete",
                health.code, health.sealed
            ));
        }
        Ok(healthy)
    }

    /// The old backup renamed as superseded (in place: then the staged new one takes its
    /// name); its new name, also when an earlier run already renamed it.
    fn retire_old_backup(&self, j: &Journal) -> Result<Option<PathBuf>> {
        let superseded = match (&j.from, &j.final_output) {
            (Some(from), Some(fin)) => {
                // In place: the current file steps aside, the staged new one takes its name.
                let mut moved = None;
                if j.output.exists() {
                    if from.exists() {
                        moved = Some(self.supersede(from)?);
                    }
                    std::fs::rename(&j.output, fin).with_context(|| {
                        format!("renaming {} to {}", j.output.display(), fin.display())
                    })?;
                    sync_parent(fin);
                }
                moved.or_else(|| find_stamped(from, "superseded"))
            }
            (Some(from), None) if from.exists() && !same_file(from, &j.output) => {
                Some(self.supersede(from)?)
            }
            (Some(from), None) => find_stamped(from, "superseded"),
            (None, _) => None,
        };
        Ok(superseded)
    }

    fn report(
        &self,
        j: &Journal,
        resumed: bool,
        healthy: bool,
        superseded: Option<PathBuf>,
    ) -> Report {
        let new_fingerprints: Vec<String> = j.new_shares.iter().map(|s| s.sha256_hex()).collect();
        let old_fingerprints: Vec<String> = j.old_shares.iter().map(|s| s.sha256_hex()).collect();
        let next_steps = next_steps(j, superseded.as_deref(), &old_fingerprints);
        Report {
            outcome: "rotated",
            resumed,
            rolled_back: None,
            cluster: j.cluster.clone(),
            server: self.server.clone(),
            secret: self.site.unseal_secret_name(),
            new_backup: new_backup_path(j).to_path_buf(),
            superseded_backup: superseded,
            threshold: j.new_threshold,
            share_count: j.new_share_count,
            new_fingerprints,
            old_fingerprints,
            vault_healthy: healthy,
            next_steps,
        }
    }

    /// Renames the old backup `from` as superseded.
    fn supersede(&self, from: &Path) -> Result<PathBuf> {
        let to = stamped(from, "superseded");
        std::fs::rename(from, &to)
            .with_context(|| format!("renaming the old backup {} as superseded", from.display()))?;
        sync_parent(&to);
        self.say(&format!(
            "the old backup {} is now {} (its key no longer opens Vault)",
            from.display(),
            to.display()
        ));
        Ok(to)
    }

    /// The new backup at `j.output`, holding the journal's new key: written and verified, or
    /// found already there (a rerun) and checked.
    /// Returns the fingerprints of the key the file holds (the new key).
    fn ensure_backup(&self, j: &Journal) -> Result<Vec<String>> {
        if let (false, Some(fin)) = (j.output.exists(), &j.final_output) {
            // In place and already renamed into its final name by an earlier run?
            if let Ok(doc) = self.keys.open_backup(fin) {
                let shares: Vec<SecretText> = doc.shares();
                if fingerprints(&shares) == fingerprints(&j.new_shares) {
                    return Ok(fingerprints(&shares));
                }
            }
        }
        if j.output.exists() {
            let doc = self
                .keys
                .open_backup(&j.output)
                .with_context(|| format!("checking the new backup {}", j.output.display()))?;
            let shares: Vec<SecretText> = doc.shares();
            if fingerprints(&shares) != fingerprints(&j.new_shares) {
                bail!(crate::next::hinted(format!("{} exists but does not hold the new key of this rotation; it was not touched", j.output.display()), format!("move it away and rerun (the journal {} holds the new key)", self.journal_path.display())));
            }
            return Ok(fingerprints(&shares));
        }
        let doc = BackupDocument::new(
            &j.cluster,
            j.new_threshold,
            j.new_share_count,
            j.new_shares.clone(),
            j.extra
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
        )?;
        self.keys.write_backup(&doc, &j.output)
            .with_context(|| {
                crate::next::hinted(
                    format!(
                        "writing the new backup {} failed; the current key still opens Vault and nothing else changed",
                        j.output.display()
                    ),
                    format!(
                        "fix the destination and rerun (the journal {} holds the new key)",
                        self.journal_path.display()
                    ),
                )
            })?;
        self.say(&format!(
            "wrote the new offline backup {} (protected by {}) and verified that it decrypts",
            j.output.display(),
            self.keys.describe()
        ));
        // write_backup decrypted the file and compared every fingerprint with `doc`.
        Ok(fingerprints(&j.new_shares))
    }
}
