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
//!
//! The steps are methods of `Rotation`: `steps.rs` holds a fresh rotation and the tail a
//! recovery shares with it, `recover.rs` the recovery of an interrupted one.

pub mod journal;
mod protect;
mod recover;
mod rekey;
mod report;
mod steps;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::remote::{HostKeyPolicy, Target};
pub use crate::site::fingerprints;
use crate::site::Site;
use crate::vault::{SealStatus, VaultClient, VaultError};
use journal::{Journal, Step};
use protect::Protection;
pub use report::Report;

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

/// A step boundary: the crash tests stop the process here (`crate::failpoint`); debug builds
/// check that the boundary is listed, so the tests cover it.
fn failpoint(boundary: &str) {
    debug_assert!(
        BOUNDARIES.contains(&boundary),
        "unknown boundary {boundary}"
    );
    crate::failpoint::exit_after(boundary);
}

/// Boundaries only a recovery passes (not in a plain rotation): a probe rekey started.
pub const RECOVERY_BOUNDARIES: &[&str] = &["rotate-probe-started"];

/// A boundary of the recovery, for the crash tests like [`failpoint`].
fn recovery_failpoint(boundary: &str) {
    debug_assert!(RECOVERY_BOUNDARIES.contains(&boundary));
    crate::failpoint::exit_after(boundary);
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
        bail!(crate::next::hinted(
            format!(
                "there is no interrupted rotation to resume (no journal at {})",
                journal_path.display()
            ),
            "run without --resume to start a rotation"
        ));
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

    /// Moves the journal to `step` and saves it.
    fn record_step(&self, j: &mut Journal, step: Step) -> Result<()> {
        j.set_step(step);
        self.save(j)
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
        // One next step: the cause's own, then the rerun.
        let fix = crate::next::of(&e).unwrap_or_else(|| "fix the cause below".into());
        e.context(crate::next::hinted(
            format!(
                "the rotation stopped part way; its state is in the encrypted journal {}",
                self.journal_path.display()
            ),
            format!("{fix}; then rerun this command (or add --resume): it finishes the rotation, or rolls it back if the new key never became active"),
        ))
    }
}

/// Vault's seal status; an uninitialised Vault has no key to rotate.
async fn initialized_status(vault: &VaultClient) -> Result<SealStatus> {
    let status = vault.seal_status().await?;
    if !status.initialized {
        return Err(VaultError::NotInitialized {
            url: vault.url().into(),
        }
        .into());
    }
    Ok(status)
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
        Err(std::fs::TryLockError::WouldBlock) => bail!(crate::next::hinted(format!("another `rebox rotate-unseal-key` for this server is running (it holds {}); nothing was changed", path.display()), "wait for it to finish, then rerun this command if it was interrupted")),
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
