//! How a rotation encrypts what it writes (the new offline backup and its journal) and opens
//! what it reads: age keys (`-r/-R` to encrypt, `-i` to prove it decrypts), or a passphrase
//! typed on the terminal (`-p`; age allows a passphrase only as the sole recipient).
//!
//! A resumed rotation keeps the protection it started with: a passphrase-protected journal
//! asks for that passphrase, which then also opens (and, after a roll-back, writes) the new
//! backup.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use zeroize::Zeroizing;

use super::journal;
use crate::keys::crypt::{self, NamedRecipient};
use crate::keys::output::Pending;
use crate::keys::{backup, passphrase, BackupDocument};
use crate::secret::SecretText;

/// The flags that say how to protect the new backup.
pub struct Flags<'a> {
    pub recipients: &'a [String],
    pub recipients_files: &'a [std::path::PathBuf],
    pub identity_files: &'a [std::path::PathBuf],
    pub passphrase: bool,
}

enum Mode {
    Keys(Vec<NamedRecipient>),
    Passphrase(SecretText),
}

/// The protection of this rotation, plus the identities that open `--from`.
pub struct Protection {
    mode: Mode,
    identities: Vec<Box<dyn age::Identity>>,
}

impl Protection {
    /// From the flags, or from the interrupted rotation's journal at `journal_path` when
    /// there is one. Passphrases are asked here, before anything remote happens.
    pub fn load(flags: &Flags<'_>, journal_path: &Path) -> Result<Protection> {
        let recipients = crypt::recipients(flags.recipients, flags.recipients_files)?;
        let identities = crypt::identities(flags.identity_files)?;
        if flags.passphrase && !recipients.is_empty() {
            bail!("-p cannot be combined with -r/-R: age allows a passphrase only as the sole protection of a file; choose one (nothing was changed)");
        }
        if journal_is_passphrase(journal_path)? {
            let pass = passphrase::ask_existing(
                "Passphrase of the interrupted rotation (its journal and new backup): ",
            )?;
            return Ok(Protection {
                mode: Mode::Passphrase(pass),
                identities,
            });
        }
        if flags.passphrase {
            if journal_path.exists() {
                bail!(crate::next::hinted(format!("the interrupted rotation (journal {}) is protected by age keys, not a passphrase", journal_path.display()), "rerun with the -r/-i flags it started with"));
            }
            let pass = passphrase::ask_new("the new offline backup")?;
            return Ok(Protection {
                mode: Mode::Passphrase(pass),
                identities,
            });
        }
        if recipients.is_empty() {
            bail!(crate::next::hinted(
                "no recipients for the new offline backup; nothing was changed",
                "pass -r age1… or -R FILE (e.g. -R ~/.ssh/id_ed25519.pub), or -p for a passphrase"
            ));
        }
        if identities.is_empty() {
            bail!(crate::next::hinted(
                "no identity to prove that the new backup decrypts; nothing was changed",
                "pass -i with the private key of one of the recipients"
            ));
        }
        backup::check_identities_match(&recipients, &identities).map_err(|e| {
            anyhow!("{e:#}\n  (here: -i must open what is encrypted to -r/-R); nothing was changed")
        })?;
        Ok(Protection {
            mode: Mode::Keys(recipients),
            identities,
        })
    }

    pub fn is_passphrase(&self) -> bool {
        matches!(self.mode, Mode::Passphrase(_))
    }

    /// `passphrase` or `age keys`, for messages.
    pub fn describe(&self) -> &'static str {
        match self.mode {
            Mode::Keys(_) => "age keys",
            Mode::Passphrase(_) => "a passphrase",
        }
    }

    /// Encrypts (armored).
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        match &self.mode {
            Mode::Keys(r) => crypt::encrypt_to_recipients(plaintext, r, true),
            Mode::Passphrase(p) => crypt::encrypt_with_passphrase(plaintext, p, true),
        }
    }

    /// Decrypts something this rotation wrote.
    pub fn open(&self, data: &[u8], label: &str) -> Result<Zeroizing<Vec<u8>>> {
        let opened = crypt::open(data, label)?;
        match &self.mode {
            Mode::Keys(_) => opened.decrypt_with_identities(&self.identities),
            Mode::Passphrase(p) => opened.decrypt_with_passphrase(p),
        }
    }

    /// Opens a backup written by this rotation (the new one).
    pub fn open_backup(&self, path: &Path) -> Result<BackupDocument> {
        let label = path.display().to_string();
        let data = read_limited(path)?;
        let plain = self.open(&data, &label)?;
        BackupDocument::parse(&plain).map_err(|e| anyhow!("{label}: {e}"))
    }

    /// Opens the current backup (`--from`): with the identities, or with its own passphrase.
    pub fn open_current(&self, path: &Path) -> Result<BackupDocument> {
        let label = path.display().to_string();
        let data = read_limited(path)?;
        let opened = crypt::open(&data, &label)?;
        let plain = if opened.is_passphrase() {
            let pass = passphrase::ask_existing(&format!("Passphrase for {label}: "))?;
            opened.decrypt_with_passphrase(&pass)?
        } else {
            opened.decrypt_with_identities(&self.identities)?
        };
        BackupDocument::parse(&plain).map_err(|e| anyhow!("{label}: {e}"))
    }

    /// Writes `doc` as a new file at `path` (0600, never over an existing file), reads it
    /// back and decrypts it, checking every fingerprint, before it becomes visible.
    pub fn write_backup(&self, doc: &BackupDocument, path: &Path) -> Result<()> {
        if let Mode::Keys(r) = &self.mode {
            return backup::write_verified(doc, r, &self.identities, path);
        }
        let label = path.display().to_string();
        let file = Pending::create(path, false)?;
        let text = doc.to_text()?;
        let ciphertext = self.seal(text.as_bytes())?;
        drop(text);
        file.write(&ciphertext)?;
        let back = file.read_back()?;
        if back != ciphertext {
            bail!("{label}: what was read back differs from what was written (failing disk or stick?)");
        }
        let got = BackupDocument::parse(&self.open(&back, &label)?)
            .map_err(|e| anyhow!("{label}: {e}"))?;
        if serde_json::to_value(got.summary())? != serde_json::to_value(doc.summary())? {
            bail!("{label}: the decrypted backup differs from what was meant to be written");
        }
        file.commit()
    }
}

impl journal::Sealer for Protection {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        Protection::seal(self, plaintext)
    }
    fn open(&self, data: &[u8], label: &str) -> Result<Zeroizing<Vec<u8>>> {
        Protection::open(self, data, label)
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .take(crypt::MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(data)
}

/// Whether the journal at `path` exists and is protected by a passphrase.
fn journal_is_passphrase(path: &Path) -> Result<bool> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(crypt::open(&data, &path.display().to_string())?.is_passphrase())
}
