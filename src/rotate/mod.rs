//! `rebox rotate-unseal-key` (issue 8): a rekey of Vault's unseal key with no instant in which
//! the key that opens Vault exists only in memory.
//!
//! Order (each arrow is a step boundary; the encrypted [`journal`] records every step before
//! the next action starts, and `REBOX_FAILPOINT_EXIT_AFTER=<boundary>` stops the process there
//! with status 86 for the crash tests):
//!
//! ```text
//! checks ─ rotate-preflight → journal "initiating" ─ rotate-journal-opened → rekey init
//!   ─ rotate-rekey-started → journal "rekey-started" ─ rotate-rekey-recorded → current key
//!   given, new key returned ─ rotate-new-key-received → journal "new-key-received" (holds the
//!   new key) ─ rotate-key-journaled → new backup written+verified ─ rotate-backup-written
//!   → journal ─ rotate-backup-recorded → Secret = new key ─ rotate-secret-updated → journal
//!   ─ rotate-secret-recorded → verification with the new key (now active) ─ rotate-verified
//!   → journal ─ rotate-verified-recorded → checks, old backup renamed *.superseded-<time>
//!   ─ rotate-old-superseded → journal removed
//! ```
//!
//! A recovery that has to ask Vault which key it accepts starts a throw-away rekey and gives
//! it a key (cancelled whatever the answer); its nonce is journaled first (boundary
//! `rotate-probe-started`), so a crash mid-probe leaves nothing a rerun does not recognise.
//!
//! Until verification the current key is the only one Vault accepts, and it is in the
//! operator's current backup (or, when it came from the Secret, in the journal). From
//! verification on the new key is in the new backup, the journal and the Secret. A rerun
//! reads the journal and Vault's state: a rekey of ours still waiting for verification is
//! finished; a rekey that is gone (Vault restarted or sealed: the pending state lives in
//! Vault's memory) or that cannot be finished (new key never saved) is rolled back — the
//! Secret gets the key Vault accepts, a new backup that never became active is renamed
//! `*.never-activated-<time>` — and the rotation starts again.
//!
//! In place (`-o` names the `--from` file) the new backup is staged as `FILE.rotating` and
//! takes the name only at the end, after the current file is renamed as superseded; a rerun
//! completes a half-done pair of renames.

pub mod journal;
mod protect;
mod rekey;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::config::Config;
use crate::keys::BackupDocument;
use crate::remote::{HostKeyPolicy, Target};
use crate::secret::SecretText;
pub use crate::site::fingerprints;
use crate::site::Site;
use crate::vault::VaultError;
use journal::{Extra, Journal, Step};
use protect::Protection;

/// The environment variable naming a step boundary to stop at (shared with the phase runner).
pub const FAILPOINT_ENV: &str = "REBOX_FAILPOINT_EXIT_AFTER";
/// Exit status of a run stopped by the failpoint.
pub const FAILPOINT_STATUS: i32 = 86;

/// Every step boundary, in order (the crash tests iterate over these).
pub const BOUNDARIES: &[&str] = &[
    "rotate-preflight",
    "rotate-journal-opened",
    "rotate-rekey-started",
    "rotate-rekey-recorded",
    "rotate-new-key-received",
    "rotate-key-journaled",
    "rotate-backup-written",
    "rotate-backup-recorded",
    "rotate-secret-updated",
    "rotate-secret-recorded",
    "rotate-verified",
    "rotate-verified-recorded",
    "rotate-old-superseded",
];

fn failpoint(boundary: &str) {
    debug_assert!(
        BOUNDARIES.contains(&boundary),
        "unknown boundary {boundary}"
    );
    if std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == boundary) {
        eprintln!("failpoint: exiting at `{boundary}` ({FAILPOINT_ENV})");
        std::process::exit(FAILPOINT_STATUS);
    }
}

/// Boundaries only a recovery passes (not in a plain rotation): a probe rekey started.
pub const RECOVERY_BOUNDARIES: &[&str] = &["rotate-probe-started"];

fn recovery_failpoint(boundary: &str) {
    debug_assert!(RECOVERY_BOUNDARIES.contains(&boundary));
    if std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == boundary) {
        eprintln!("failpoint: exiting at `{boundary}` ({FAILPOINT_ENV})");
        std::process::exit(FAILPOINT_STATUS);
    }
}

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The current offline backup (else the current key comes from the Secret).
    pub from: Option<PathBuf>,
    /// Where the new offline backup goes (taken from the journal on a resume when absent).
    pub output: Option<PathBuf>,
    pub recipients: Vec<String>,
    pub recipients_files: Vec<PathBuf>,
    pub identity_files: Vec<PathBuf>,
    /// Protect the new backup (and the journal) with a passphrase typed on the terminal.
    pub passphrase: bool,
    /// New key shape; default: the current one.
    pub shares: Option<u32>,
    pub threshold: Option<u32>,
    /// Only resume an interrupted rotation (fail if there is none).
    pub resume: bool,
    /// Cancel a rekey in progress that this rotation did not start.
    pub cancel_existing: bool,
}

/// The result, for the report and `--json`. Holds no secret: fingerprints only.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `rotated`.
    pub outcome: &'static str,
    /// An interrupted rotation was found and finished.
    pub resumed: bool,
    /// An interrupted rotation was found and rolled back before this one.
    pub rolled_back: Option<String>,
    pub cluster: String,
    pub server: String,
    pub secret: String,
    pub new_backup: PathBuf,
    pub superseded_backup: Option<PathBuf>,
    pub threshold: u32,
    pub share_count: u32,
    pub new_fingerprints: Vec<String>,
    pub old_fingerprints: Vec<String>,
    pub vault_healthy: bool,
    pub next_steps: Vec<String>,
}

/// Hooks into the command's UI: progress lines and the confirmation.
pub struct Ui<'a> {
    pub progress: &'a dyn Fn(&str),
    pub confirm: &'a dyn Fn(&str) -> Result<bool>,
}

/// Runs (or resumes) a rotation. See the module docs for the order of steps.
pub async fn run(
    settings: &Settings,
    config: Config,
    target: Target,
    policy: HostKeyPolicy,
    ui: &Ui<'_>,
) -> Result<Report> {
    // Local checks first: keys, journal, the current backup; nothing remote is touched yet.
    let journal_path = journal::path_for_host(&target.host)?;
    let _lock = lock(&journal_path)?;
    let keys = Protection::load(
        &protect::Flags {
            recipients: &settings.recipients,
            recipients_files: &settings.recipients_files,
            identity_files: &settings.identity_files,
            passphrase: settings.passphrase,
        },
        &journal_path,
    )?;
    let pending = journal::load(&journal_path, &keys)?;
    if settings.resume && pending.is_none() {
        bail!(
            "there is no interrupted rotation to resume (no journal at {})\n  next: run without --resume to start a rotation",
            journal_path.display()
        );
    }
    if let (None, Some(from)) = (&pending, &settings.from) {
        if !from.is_file() {
            bail!(
                "the current backup {} (--from) does not exist or is not a file; nothing was changed",
                from.display()
            );
        }
    }
    if let Some(j) = &pending {
        (ui.progress)(&format!(
            "found an interrupted rotation (started {}, step `{}`) in {}",
            j.started_at,
            j.step.name(),
            journal_path.display()
        ));
    }
    let server = target.addr();
    (ui.progress)(&format!("connecting to {server}"));
    let site = Site::connect(config, target.clone(), policy).await?;
    let mut r = Rotation {
        settings,
        // Absolute: the journal must still name the files when a rerun starts elsewhere.
        from: settings
            .from
            .as_deref()
            .map(std::path::absolute)
            .transpose()?,
        output: settings
            .output
            .as_deref()
            .map(std::path::absolute)
            .transpose()?,
        keys,
        journal_proven: std::cell::Cell::new(false),
        journal_path,
        site,
        host: target.host.clone(),
        server,
        ui,
    };
    let result = r.go(pending).await;
    r.site.close().await;
    result
}

/// How an interrupted rotation ended.
enum Recovered {
    Finished(Box<Report>),
    /// Rolled back; the string says what was done.
    RolledBack(String),
}

/// Which key opens Vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Active {
    Old,
    New,
}

struct Rotation<'a> {
    settings: &'a Settings,
    /// The current backup and the new backup's path: the flags, else the journal's.
    from: Option<PathBuf>,
    output: Option<PathBuf>,
    keys: Protection,
    /// A journal save of this run was decrypted back successfully.
    journal_proven: std::cell::Cell<bool>,
    journal_path: PathBuf,
    site: Site,
    host: String,
    server: String,
    ui: &'a Ui<'a>,
}

impl Rotation<'_> {
    fn say(&self, line: &str) {
        (self.ui.progress)(line);
    }

    /// Saves the journal. Decrypting it back is cheap with age keys and done every time; with
    /// a passphrase (scrypt, about a second) the first save of a run proves the round trip and
    /// later ones are checked byte for byte against what was encrypted.
    fn save(&self, j: &Journal) -> Result<()> {
        let prove = !self.keys.is_passphrase() || !self.journal_proven.get();
        journal::save(j, &self.journal_path, &self.keys, prove)?;
        self.journal_proven.set(true);
        Ok(())
    }

    async fn go(&mut self, pending: Option<Journal>) -> Result<Report> {
        let mut rolled_back = None;
        if let Some(j) = pending {
            match self.recover(j).await.map_err(|e| self.interrupted(e))? {
                Recovered::Finished(report) => return Ok(*report),
                Recovered::RolledBack(what) => {
                    self.say(&format!("{what}; starting the rotation again"));
                    rolled_back = Some(what);
                }
            }
        }
        let mut report = self.fresh().await.map_err(|e| self.interrupted(e))?;
        report.rolled_back = rolled_back;
        Ok(report)
    }

    /// An error after the journal was written: say where the state is and what a rerun does.
    fn interrupted(&self, e: anyhow::Error) -> anyhow::Error {
        if !self.journal_path.exists() {
            return e;
        }
        e.context(format!(
            "the rotation stopped part way; its state is in the encrypted journal {}\n  next: fix the cause below, then rerun this command (or add --resume): it finishes the rotation, or rolls it back if the new key never became active",
            self.journal_path.display()
        ))
    }

    // ---------------------------------------------------------------- fresh rotation

    async fn fresh(&mut self) -> Result<Report> {
        let vault = self.site.vault().await?.clone();
        let status = vault.seal_status().await?;
        if !status.initialized {
            return Err(VaultError::NotInitialized {
                url: vault.url().into(),
            }
            .into());
        }
        if status.sealed {
            bail!(
                "Vault is sealed; a rotation needs an unsealed Vault, and nothing was changed\n  next: let the auto-unseal CronJob unseal it (or unseal it with the offline backup), then run this again"
            );
        }
        let output = self.output.clone().ok_or_else(|| {
            anyhow!("no destination for the new offline backup\n  next: pass -o NEW-FILE (e.g. on the USB stick, next to the current backup)")
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

        // The current key: the backup file and/or the Secret, which must agree.
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
                    Some(s) if fingerprints(s) != fingerprints(&shares) => bail!(
                        "the current backup {} and Secret {secret_name} hold different keys, so it is unclear which one opens Vault; nothing was changed\n  next: compare them with `rebox key verify -i ID {} --against-cluster`; give --from the backup that opens Vault, and fix the Secret (or make a new backup with `rebox key export`) first",
                        self.from.as_ref().expect("from").display(),
                        self.from.as_ref().expect("from").display()
                    ),
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
            (None, _) => bail!(
                "no current unseal key: Secret {secret_name} is missing or empty and no --from backup was given; nothing was changed\n  next: pass --from CURRENT-BACKUP.age"
            ),
        };
        if (old_shares.len() as u32) < status.threshold {
            bail!(
                "the current key has {} share(s) but Vault needs {} to authorise a rekey; nothing was changed\n  next: give --from a backup that holds at least {} shares",
                old_shares.len(),
                status.threshold,
                status.threshold
            );
        }

        // No rekey of someone else's in the way.
        let rekey = vault.rekey_status().await?;
        if rekey.started && !self.settings.cancel_existing {
            return Err(VaultError::RekeyInProgress {
                url: vault.url().into(),
                nonce: Some(rekey.nonce.clone()),
                verification_pending: rekey.verification_nonce.is_some(),
            })
            .context("nothing was changed; pass --cancel-existing to cancel that rekey (its new key, if any, never became active) and rotate");
        }
        let to_cancel = rekey.started.then(|| rekey.nonce.clone());

        let new_share_count = self.settings.shares.unwrap_or(status.shares.max(1));
        let new_threshold = self.settings.threshold.unwrap_or(status.threshold.max(1));
        if new_threshold == 0 || new_threshold > new_share_count {
            bail!("--threshold {new_threshold} is impossible with {new_share_count} share(s); nothing was changed");
        }
        let question = format!(
            "Rotate the Vault unseal key on {} ({} of {} shares now, {} of {} after)? The new key goes to {} and Secret {}",
            self.server,
            status.threshold,
            status.shares,
            new_threshold,
            new_share_count,
            output.display(),
            secret_name
        );
        let question = match &to_cancel {
            Some(n) => format!("{question}. The rekey in progress (nonce {n}) is cancelled first"),
            None => question,
        };
        if !(self.ui.confirm)(&question)? {
            bail!(
                "not confirmed; nothing was changed\n  next: answer yes, or pass --yes in scripts"
            );
        }
        failpoint("rotate-preflight");
        if let Some(nonce) = to_cancel {
            self.say(&format!(
                "cancelling the rekey already in progress (nonce {nonce}), as --cancel-existing asks"
            ));
            vault.rekey_cancel(&nonce).await?;
        }

        let now = crate::flow::journal::now();
        let mut j = Journal {
            format: journal::FORMAT_NAME.into(),
            version: journal::FORMAT_VERSION,
            host: self.host.clone(),
            cluster,
            started_at: now.clone(),
            updated_at: now,
            step: Step::Initiating,
            rekey_nonce: None,
            probe_nonce: None,
            from: self.from.clone(),
            output,
            final_output,
            secret_existed: secret.is_some(),
            old_threshold: status.threshold,
            new_threshold,
            new_share_count,
            old_shares,
            new_shares: vec![],
            extra,
        };
        self.save(&j)?;
        failpoint("rotate-journal-opened");

        self.say(&format!(
            "starting a rekey that requires verification ({new_threshold} of {new_share_count} shares)"
        ));
        let started = vault
            .rekey_init(new_share_count, new_threshold, true)
            .await?;
        failpoint("rotate-rekey-started");
        j.rekey_nonce = Some(started.nonce.clone());
        j.set_step(Step::RekeyStarted);
        self.save(&j)?;
        failpoint("rotate-rekey-recorded");

        self.say("giving Vault the current key");
        let keys = match rekey::give_current_key(&vault, &started.nonce, &j.old_shares).await {
            Ok(k) => k,
            Err(e) => {
                // Nothing new exists: cancel, forget the journal, report.
                let cancelled = vault.rekey_cancel(&started.nonce).await;
                let source = match &self.from {
                    Some(p) => p.display().to_string(),
                    None => format!("Secret {secret_name}"),
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
                    bail!(
                        "Vault refused the current key from {source}: it does not open this Vault; {undo}\n  next: check which backup belongs to this Vault (`rebox key verify -i ID FILE --against-cluster`) and pass it with --from"
                    );
                }
                return Err(anyhow::Error::from(e).context(format!(
                    "giving the current key to the rekey failed; {undo}"
                )));
            }
        };
        if !keys.verification_required || keys.verification_nonce.is_none() {
            bail!("Vault rotated the key without the verification step that was requested; this is not how Vault behaves (facts card §1). The new key was not saved anywhere\n  next: stop and check which Vault rebox is talking to");
        }
        let new_shares = keys.keys.clone();
        drop(keys);
        failpoint("rotate-new-key-received");
        j.new_shares = new_shares;
        j.set_step(Step::NewKeyReceived);
        if let Err(e) = self.save(&j) {
            // The new key would exist in memory only: give it up while the old key is active.
            let undo = match vault.rekey_cancel(&started.nonce).await {
                Ok(()) => "the rekey was cancelled; the current key still opens Vault".to_string(),
                Err(c) => format!("cancelling the rekey failed too ({c}); the current key still opens Vault, and a rerun cancels the rekey"),
            };
            return Err(e.context(format!(
                "the new key could not be saved in the journal {}; {undo}\n  next: fix the laptop's state directory (disk full?) and rerun",
                self.journal_path.display()
            )));
        }
        self.say(&format!(
            "Vault made the new key ({} share(s)); it is in the encrypted journal, not active yet",
            j.new_shares.len()
        ));
        failpoint("rotate-key-journaled");
        self.advance(j, false).await
    }

    // ---------------------------------------------------------------- the common tail

    /// From "the new key exists and waits for verification" to the end.
    async fn advance(&mut self, mut j: Journal, resumed: bool) -> Result<Report> {
        if j.step < Step::BackupWritten {
            self.ensure_backup(&j)?;
            failpoint("rotate-backup-written");
            j.set_step(Step::BackupWritten);
            self.save(&j)?;
            failpoint("rotate-backup-recorded");
        }
        if j.step < Step::SecretUpdated {
            self.say(&format!(
                "putting the new key in Secret {} (Vault still opens only with the current key)",
                self.site.unseal_secret_name()
            ));
            self.site.write_unseal_secret(&j.new_shares).await?;
            failpoint("rotate-secret-updated");
            j.set_step(Step::SecretUpdated);
            self.save(&j)?;
            failpoint("rotate-secret-recorded");
        }
        if j.step < Step::Verified {
            self.say("verifying the new key with Vault (this makes it the active key)");
            rekey::verify_new_key(self.site.vault().await?, &j.new_shares)
                .await
                .context("the verification of the new key failed; the current key still opens Vault\n  next: rerun this command: it finishes or rolls back the rotation")?;
            failpoint("rotate-verified");
            j.set_step(Step::Verified);
            self.save(&j)?;
            failpoint("rotate-verified-recorded");
        }
        self.finish(j, resumed).await
    }

    /// The new key is active: make sure the backup and the Secret hold it, check Vault, retire
    /// the old backup, forget the journal.
    async fn finish(&mut self, j: Journal, resumed: bool) -> Result<Report> {
        let in_backup = self.ensure_backup(&j)?;
        let in_secret = self
            .site
            .read_unseal_secret()
            .await?
            .shares()
            .unwrap_or_default();
        if fingerprints(&in_secret) != fingerprints(&j.new_shares) {
            self.say(&format!(
                "putting the new key in Secret {}",
                self.site.unseal_secret_name()
            ));
            self.site.write_unseal_secret(&j.new_shares).await?;
        }
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
            bail!(
                "after the rotation, Secret {} and {} hold different keys; the NEW key (in {}) is the one that opens Vault\n  next: rerun this command to repair the Secret",
                self.site.unseal_secret_name(),
                new_backup_path(&j).display(),
                new_backup_path(&j).display()
            );
        }
        if !healthy {
            self.say(&format!(
                "warning: Vault's health answer is {} (sealed: {}); the rotation itself is complete",
                health.code, health.sealed
            ));
        }
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
        failpoint("rotate-old-superseded");
        journal::remove(&self.journal_path)?;
        self.say(&format!(
            "done: the new key is the only one that opens Vault, and Secret {} and {} hold it",
            self.site.unseal_secret_name(),
            new_backup_path(&j).display()
        ));
        let new_fingerprints: Vec<String> = j.new_shares.iter().map(|s| s.sha256_hex()).collect();
        let old_fingerprints: Vec<String> = j.old_shares.iter().map(|s| s.sha256_hex()).collect();
        let next_steps = next_steps(&j, superseded.as_deref(), &old_fingerprints);
        Ok(Report {
            outcome: "rotated",
            resumed,
            rolled_back: None,
            cluster: j.cluster.clone(),
            server: self.server.clone(),
            secret: self.site.unseal_secret_name(),
            new_backup: new_backup_path(&j).to_path_buf(),
            superseded_backup: superseded,
            threshold: j.new_threshold,
            share_count: j.new_share_count,
            new_fingerprints,
            old_fingerprints,
            vault_healthy: healthy,
            next_steps,
        })
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
                bail!(
                    "{} exists but does not hold the new key of this rotation; it was not touched\n  next: move it away and rerun (the journal {} holds the new key)",
                    j.output.display(),
                    self.journal_path.display()
                );
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
                format!(
                    "writing the new backup {} failed; the current key still opens Vault and nothing else changed\n  next: fix the destination and rerun (the journal {} holds the new key)",
                    j.output.display(),
                    self.journal_path.display()
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

    // ---------------------------------------------------------------- resume

    /// Finishes or rolls back the rotation the journal describes.
    async fn recover(&mut self, mut j: Journal) -> Result<Recovered> {
        // A restart after a roll-back uses the files of the interrupted rotation unless told
        // otherwise.
        if self.from.is_none() {
            self.from = j.from.clone();
        }
        if self.output.is_none() {
            self.output = Some(new_backup_path(&j).to_path_buf());
        }
        let vault = self.site.vault().await?.clone();
        let status = vault.seal_status().await?;
        if !status.initialized {
            return Err(VaultError::NotInitialized {
                url: vault.url().into(),
            }
            .into());
        }
        let active = if status.sealed {
            // A seal drops a pending rekey: whichever key unseals Vault is the active one.
            self.say(
                "Vault is sealed: the interrupted rekey is gone; finding which key opens Vault",
            );
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
                anyhow!(
                    "Vault is sealed and neither the current nor the new key of the interrupted rotation opens it; nothing was changed\n  next: unseal it with the offline backup that belongs to it; the journal {} is kept",
                    self.journal_path.display()
                )
            })?;
            self.say(&format!(
                "Vault unsealed with the {} key",
                if which == Active::Old {
                    "current (old)"
                } else {
                    "new"
                }
            ));
            which
        } else if j.step == Step::Verified {
            // Vault verified the new key: nothing to ask it (a rekey someone started since
            // then is theirs to finish).
            Active::New
        } else {
            let mut rekey = vault.rekey_status().await?;
            if rekey.started && j.probe_nonce.as_deref() == Some(rekey.nonce.as_str()) {
                self.say("cancelling the probe rekey an interrupted run left behind");
                vault.rekey_cancel(&rekey.nonce).await?;
                rekey = vault.rekey_status().await?;
            }
            let ours = rekey.started
                && (j.rekey_nonce.as_deref() == Some(rekey.nonce.as_str())
                    || (j.step == Step::Initiating
                        && rekey.verification_required
                        && rekey.threshold == j.new_threshold
                        && rekey.shares == j.new_share_count));
            if rekey.started && ours {
                if rekey.verification_nonce.is_some() && !j.new_shares.is_empty() {
                    self.say(&format!(
                        "the rekey of the interrupted rotation still waits for verification; finishing it from step `{}`",
                        j.step.name()
                    ));
                    let report = self.advance(j, true).await?;
                    return Ok(Recovered::Finished(Box::new(report)));
                }
                // Started but its new key was never saved: nothing to finish.
                self.say("cancelling the rekey of the interrupted rotation (its new key was never saved)");
                vault.rekey_cancel(&rekey.nonce).await?;
                Active::Old
            } else {
                if rekey.started {
                    if !self.settings.cancel_existing {
                        return Err(VaultError::RekeyInProgress {
                            url: vault.url().into(),
                            nonce: Some(rekey.nonce.clone()),
                            verification_pending: rekey.verification_nonce.is_some(),
                        })
                        .context(format!(
                            "an interrupted rotation (journal {}) waits to be finished, but a rekey it did not start is in progress; nothing was changed\n  next: pass --cancel-existing to cancel that rekey",
                            self.journal_path.display()
                        ));
                    }
                    self.say(&format!(
                        "cancelling a rekey this rotation did not start (nonce {}), as --cancel-existing asks",
                        rekey.nonce
                    ));
                    vault.rekey_cancel(&rekey.nonce).await?;
                }
                match j.step {
                    // Verification starts only after `secret-updated` is recorded.
                    s if s < Step::SecretUpdated => Active::Old,
                    Step::Verified => Active::New,
                    _ => {
                        self.say("the rekey is gone from Vault (restarted or sealed?); asking Vault which key it accepts");
                        if self.probe(&mut j, Active::New).await? {
                            Active::New
                        } else if self.probe(&mut j, Active::Old).await? {
                            Active::Old
                        } else {
                            bail!(
                                "Vault accepts neither the current nor the new key of the interrupted rotation; nothing was changed\n  next: check that rebox talks to the right Vault; the journal {} is kept",
                                self.journal_path.display()
                            );
                        }
                    }
                }
            }
        };
        match active {
            Active::New => {
                self.say("the new key is the active key; finishing the rotation");
                if j.step < Step::Verified {
                    j.set_step(Step::Verified);
                    self.save(&j)?;
                }
                let report = self.finish(j, true).await?;
                Ok(Recovered::Finished(Box::new(report)))
            }
            Active::Old => self.roll_back(j).await.map(Recovered::RolledBack),
        }
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

/// One rotation per host at a time: an exclusive lock next to the journal, held for the run
/// (released by the OS if the process dies, so a crash never leaves it stuck).
fn lock(journal_path: &Path) -> Result<std::fs::File> {
    let dir = journal_path
        .parent()
        .context("the journal path has no directory")?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the state directory {}", dir.display()))?;
    let path = dir.join("rotation.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another `rebox rotate-unseal-key` for this server is running (it holds {}); nothing was changed\n  next: wait for it to finish, then rerun this command if it was interrupted",
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// What the operator does with the copies of the old key.
fn next_steps(j: &Journal, superseded: Option<&Path>, old_fps: &[String]) -> Vec<String> {
    let out = new_backup_path(j).display();
    let mut v = vec![
        format!("copy {out} to where the offline backup lives (USB stick, safe); check each copy with `rebox key verify -i IDENTITY {out}`"),
        format!(
            "paper and password-manager copies of the OLD key (share fingerprints {}) no longer open Vault: replace them with the new key (`rebox key show --reveal -i IDENTITY {out}`, or print `rebox key export --paper` from the cluster), then destroy the old ones",
            old_fps.iter().map(|f| &f[..12.min(f.len())]).collect::<Vec<_>>().join(", ")
        ),
    ];
    match superseded {
        Some(p) => v.push(format!(
            "{} holds only the old key (and any extra secrets, now also in {out}); delete it once every new copy is checked",
            p.display()
        )),
        None => v.push("older offline backups of this Vault hold the old key only: retire them".into()),
    }
    v
}

/// `FILE.<what>-20260126T031500Z` (a free name next to `path`).
fn stamped(path: &Path, what: &str) -> PathBuf {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let stamp = time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_else(|_| "0".into());
    let base = format!("{}.{what}-{stamp}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        n += 1;
        candidate = PathBuf::from(format!("{base}.{n}"));
    }
    candidate
}

/// The newest `FILE.<what>-*` next to `path`, if any (a rerun after the rename).
fn find_stamped(path: &Path, what: &str) -> Option<PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!("{}.{what}-", path.file_name()?.to_string_lossy());
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.pop()
}

/// Where the new backup ends up (its staging name is `j.output` in an in-place rotation).
fn new_backup_path(j: &Journal) -> &Path {
    j.final_output.as_deref().unwrap_or(&j.output)
}

/// `vault-key.age` → `vault-key.age.rotating`: the new backup of an in-place rotation until
/// its key is active.
fn staging_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".rotating");
    PathBuf::from(name)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_stamped_names_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("vault-key.age");
        std::fs::write(&f, "x").unwrap();
        let a = stamped(&f, "superseded");
        std::fs::write(&a, "x").unwrap();
        let b = stamped(&f, "superseded");
        assert_ne!(a, b);
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("vault-key.age.superseded-"));
        std::fs::write(&b, "x").unwrap();
        assert!(find_stamped(&f, "superseded").is_some());
        assert!(find_stamped(&f, "never-activated").is_none());
    }

    #[test]
    fn rotate_boundaries_are_unique() {
        let mut b = BOUNDARIES.to_vec();
        b.sort();
        b.dedup();
        assert_eq!(b.len(), BOUNDARIES.len());
        assert!(BOUNDARIES.len() >= 8);
    }
}
