//! The rotation journal: what an interrupted `rebox rotate-unseal-key` needs to finish or roll
//! back, kept on the laptop (`~/.local/state/rebox/<host>/rotation.age`, mode 0600).
//!
//! It holds both keys (the current one and, once Vault has produced it, the new one), so it is
//! never written in plain text: it is age-encrypted to the new backup's recipients, like the
//! backup itself, and proven to decrypt with the operator's identity before it replaces the
//! previous version. Decrypted with the stock `age -d`, it is a commented TOML document whose
//! header says which key opens Vault in each step and how to repair the Secret by hand.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keys::crypt;
use crate::keys::output::Pending;
use crate::secret::SecretText;

/// The `format` field of a rotation journal.
pub const FORMAT_NAME: &str = "rebox-rotation-journal";
pub const FORMAT_VERSION: u32 = 1;
/// File name inside the host's state directory.
pub const FILE_NAME: &str = "rotation.age";

const HEADER: &str = "\
# rebox rotation journal: an unseal key rotation that has not finished. KEEP THIS TEXT SECRET.
#
# `step` says how far it got. Until `step = \"verified\"`, the CURRENT key (`old_shares`) is
# the only key that opens Vault; from `verified` on, only the NEW key (`new_shares`) does.
# From `secret-updated` on (and possibly a moment before), the Secret the auto-unseal CronJob
# reads may already hold the new key; if Vault seals before the rotation is finished, that
# key does not open it yet. To repair by hand: unseal with `old_shares`
#   kubectl -n security port-forward svc/vault 8200:8200 &
#   VAULT_ADDR=http://127.0.0.1:8200 vault operator unseal
# with no key argument: it asks for the share on the terminal (never put a share on a
# command line); repeat for `threshold` different shares.
# Better: rerun `rebox rotate-unseal-key --resume` with the same -i/-r flags: it finds out
# which key Vault accepts, puts that key in the Secret, and finishes or rolls back.
";

/// How far the rotation got. Each step is recorded before the next action starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// About to start the rekey (Vault may or may not have one yet).
    Initiating,
    /// Vault has our rekey (`rekey_nonce`); no new key yet.
    RekeyStarted,
    /// Vault produced the new key, which is in this journal; it waits for verification.
    NewKeyReceived,
    /// The new offline backup is written and verified.
    BackupWritten,
    /// The Secret holds the new (not yet active) key.
    SecretUpdated,
    /// Vault verified the new key: it is the only key that opens Vault now.
    Verified,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Initiating => "initiating",
            Step::RekeyStarted => "rekey-started",
            Step::NewKeyReceived => "new-key-received",
            Step::BackupWritten => "backup-written",
            Step::SecretUpdated => "secret-updated",
            Step::Verified => "verified",
        }
    }
}

/// A named extra secret carried over from the current backup to the new one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extra {
    pub name: String,
    #[serde(serialize_with = "SecretText::serialize_exposed")]
    pub value: SecretText,
}

/// The journal document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    pub format: String,
    pub version: u32,
    pub host: String,
    pub cluster: String,
    pub started_at: String,
    pub updated_at: String,
    pub step: Step,
    /// The rekey's nonce once Vault answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekey_nonce: Option<String>,
    /// The nonce of a rekey started only to ask Vault which key it accepts (recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_nonce: Option<String>,
    /// The current backup file given with --from (renamed as superseded at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PathBuf>,
    /// Where the new offline backup is written.
    pub output: PathBuf,
    /// In-place rotation (`-o` is the `--from` file): the name the new backup takes at the
    /// end, when the current file is renamed as superseded; `output` is a staging name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_output: Option<PathBuf>,
    /// Whether the Secret existed when the rotation started.
    pub secret_existed: bool,
    pub old_threshold: u32,
    pub new_threshold: u32,
    pub new_share_count: u32,
    #[serde(serialize_with = "crate::secret::serialize_exposed_all")]
    pub old_shares: Vec<SecretText>,
    #[serde(default, serialize_with = "crate::secret::serialize_exposed_all")]
    pub new_shares: Vec<SecretText>,
    #[serde(default)]
    pub extra: Vec<Extra>,
}

impl Journal {
    pub fn set_step(&mut self, step: Step) {
        self.step = step;
        self.updated_at = crate::flow::journal::now();
    }

    fn to_text(&self) -> Result<Zeroizing<String>> {
        let body = Zeroizing::new(toml::to_string(self).context("serialising the journal")?);
        let mut out = Zeroizing::new(String::with_capacity(HEADER.len() + body.len() + 1));
        out.push_str(HEADER);
        out.push('\n');
        out.push_str(&body);
        Ok(out)
    }

    fn parse(plaintext: &[u8], label: &str) -> Result<Journal> {
        let text = std::str::from_utf8(plaintext)
            .map_err(|_| anyhow!("{label} decrypts to binary data, not a rotation journal"))?;
        // Never echo the document (it holds keys): only say what is wrong.
        let j: Journal = toml::from_str(text).map_err(|e| {
            anyhow!(
                "{label} decrypts, but is not a rotation journal this rebox reads ({})",
                e.message().lines().next().unwrap_or("unreadable")
            )
        })?;
        if j.format != FORMAT_NAME || j.version != FORMAT_VERSION {
            bail!("{label} is not a version-{FORMAT_VERSION} rebox rotation journal");
        }
        Ok(j)
    }
}

/// Encrypts and decrypts the journal (age keys or a passphrase; see `protect`).
pub trait Sealer {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>>;
    fn open(&self, data: &[u8], label: &str) -> Result<Zeroizing<Vec<u8>>>;
}

/// Where the journal of `host` lives: beside the rebuild journal of that host.
pub fn path_for_host(host: &str) -> Result<PathBuf> {
    let local = crate::flow::journal::LocalStore::for_host(host)?;
    let dir = local
        .path
        .parent()
        .context("the state directory has no parent")?;
    Ok(dir.join(FILE_NAME))
}

/// Encrypts `journal`, writes it 0600 next to `path`, checks what reached the disk and (with
/// `prove`) that it decrypts to the same document, then atomically replaces `path`.
pub fn save(journal: &Journal, path: &Path, sealer: &dyn Sealer, prove: bool) -> Result<()> {
    let dir = path.parent().context("the journal path has no directory")?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the state directory {}", dir.display()))?;
    restrict_dir(dir);
    let label = path.display().to_string();
    let file = Pending::create(path, true)?;
    let text = journal.to_text()?;
    let ciphertext = sealer.seal(text.as_bytes())?;
    file.write(&ciphertext)?;
    let back = file.read_back()?;
    if back != ciphertext {
        bail!("{label}: what was read back differs from what was written (failing disk?)");
    }
    if prove {
        let plain = sealer.open(&back, &label).map_err(|e| {
            anyhow!("{e:#}\nthe rotation journal just written does not decrypt; it was not saved")
        })?;
        if plain.as_slice() != text.as_bytes() {
            bail!("{label}: the journal decrypts to something else than was written");
        }
    }
    file.commit()
        .with_context(|| format!("saving the rotation journal {label}"))
}

/// The journal at `path`, if there is one. A journal that cannot be opened is an error (it
/// may describe a rotation in flight), never ignored.
pub fn load(path: &Path, sealer: &dyn Sealer) -> Result<Option<Journal>> {
    let label = path.display().to_string();
    let mut data = Vec::new();
    match std::fs::File::open(path) {
        Ok(f) => {
            f.take(crypt::MAX_FILE_BYTES as u64 + 1)
                .read_to_end(&mut data)
                .with_context(|| format!("reading the rotation journal {label}"))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {label}")),
    }
    let plain = sealer.open(&data, &label).map_err(|e| {
        anyhow!(crate::next::hinted(format!("{e:#}\nthe rotation journal {label} (an interrupted rotation) does not open with the keys given"), "pass -i with the private key of the recipients used when the rotation started"))
    })?;
    Journal::parse(&plain, &label).map(Some)
}

/// Removes the journal (the rotation is over) and syncs the directory.
pub fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// The state directory holds key material in flight: owner only (best effort).
fn restrict_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::debug!("cannot restrict {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Journal {
        Journal {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            host: "h".into(),
            cluster: "c".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
            step: Step::NewKeyReceived,
            rekey_nonce: Some("n".into()),
            probe_nonce: None,
            from: None,
            output: "/x/new.age".into(),
            final_output: None,
            secret_existed: true,
            old_threshold: 1,
            new_threshold: 1,
            new_share_count: 1,
            old_shares: vec![SecretText::new("b2xkLXNoYXJlLXJvdGF0ZQ==".into())],
            new_shares: vec![SecretText::new("bmV3LXNoYXJlLXJvdGF0ZQ==".into())],
            extra: vec![],
        }
    }

    struct X(age::x25519::Identity);

    impl Sealer for X {
        fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
            let r = crypt::parse_recipient(&self.0.to_public().to_string())?;
            crypt::encrypt_to_recipients(plaintext, &[r], true)
        }
        fn open(&self, data: &[u8], label: &str) -> Result<Zeroizing<Vec<u8>>> {
            let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(self.0.clone())];
            crypt::open(data, label)?.decrypt_with_identities(&ids)
        }
    }

    #[test]
    fn rotate_journal_is_encrypted_0600_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let ids = X(age::x25519::Identity::generate());
        let path = dir.path().join("state/rotation.age");
        assert!(load(&path, &ids).unwrap().is_none());
        save(&sample(), &path, &ids, true).unwrap();
        let raw = std::fs::read_to_string(&path).unwrap();
        assert!(raw.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert!(!raw.contains("bmV3LXNoYXJlLXJvdGF0ZQ") && !raw.contains("new-key-received"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = load(&path, &ids).unwrap().unwrap();
        assert_eq!(back.step, Step::NewKeyReceived);
        assert_eq!(back.new_shares[0].expose(), "bmV3LXNoYXJlLXJvdGF0ZQ==");
        // Another identity cannot open it, and says what to do.
        let other = X(age::x25519::Identity::generate());
        let err = load(&path, &other).unwrap_err();
        let next = crate::next::of(&err).unwrap_or_default();
        assert!(next.contains("pass -i"), "{err:#} / {next}");
        remove(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn rotate_journal_steps_are_ordered() {
        assert!(Step::Initiating < Step::RekeyStarted);
        assert!(Step::BackupWritten < Step::SecretUpdated);
        assert!(Step::SecretUpdated < Step::Verified);
    }
}
