//! Writing and reading a key-encrypted backup from the library (used by the rebuild, which
//! must prove the new unseal key decrypts from the offline file before Vault's only other
//! copy, its memory, is relied on). `rebox key export` does the same with more options.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::crypt::{self, NamedRecipient};
use super::output::Pending;
use super::passphrase;
use super::BackupDocument;

/// Encrypts `doc` to `recipients` (armored), writes it 0600 to `path` (never over an existing
/// file), reads it back and decrypts it with `identities`, checking every fingerprint, and
/// only then makes it visible. Without a matching identity nothing is written.
pub fn write_verified(
    doc: &BackupDocument,
    recipients: &[NamedRecipient],
    identities: &[Box<dyn age::Identity>],
    path: &Path,
) -> Result<()> {
    if recipients.is_empty() {
        bail!("no recipients for the offline backup; nothing was written");
    }
    if identities.is_empty() {
        bail!("no identity to prove the offline backup decrypts; nothing was written");
    }
    let label = path.display().to_string();
    let file = Pending::create(path, false)?;
    let text = doc.to_text()?;
    let ciphertext = crypt::encrypt_to_recipients(text.as_bytes(), recipients, true)?;
    drop(text);
    file.write(&ciphertext)?;
    let back = file.read_back()?;
    if back != ciphertext {
        bail!("{label}: what was read back differs from what was written (failing disk or stick?)");
    }
    let plaintext = crypt::open(&back, &label)?
        .decrypt_with_identities(identities)
        .map_err(|e| {
            anyhow!("{e}\nthe identity does not open the backup just written; nothing was written")
        })?;
    let got = BackupDocument::parse(&plaintext).map_err(|e| anyhow!("{label}: {e}"))?;
    // Summaries hold metadata and fingerprints only; compare them as data.
    if serde_json::to_value(got.summary())? != serde_json::to_value(doc.summary())? {
        bail!("{label}: the decrypted backup differs from what was meant to be written; nothing was written");
    }
    file.commit()
}

/// Proves, before any secret exists, that `identities` open what is encrypted to
/// `recipients` (a mismatch found after Vault's init would leave a key no one can read).
pub fn check_identities_match(
    recipients: &[NamedRecipient],
    identities: &[Box<dyn age::Identity>],
) -> Result<()> {
    let probe = crypt::encrypt_to_recipients(b"rebox identity probe", recipients, false)?;
    let opened = crypt::open(&probe, "identity probe")?
        .decrypt_with_identities(identities)
        .map_err(|e| {
            anyhow!(crate::next::hinted(
                format!("{e}"),
                "the --key-identity file must hold the private key of one --key-recipient"
            ))
        })?;
    if opened.as_slice() != b"rebox identity probe" {
        bail!("the identity probe decrypted to something else (an age defect)");
    }
    Ok(())
}

/// Opens a key-encrypted backup with `identities`.
pub fn open_with_identities(
    path: &Path,
    identities: &[Box<dyn age::Identity>],
) -> Result<BackupDocument> {
    let label = path.display().to_string();
    let mut data = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("cannot open the offline backup {label}"))?
        .take(crypt::MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read the offline backup {label}"))?;
    let plaintext = crypt::open(&data, &label)?.decrypt_with_identities(identities)?;
    BackupDocument::parse(&plaintext).map_err(|e| anyhow!("{label}: {e}"))
}

/// Reads, decrypts and fully checks a backup file: with the identity files, or by asking for
/// the passphrase when the file is passphrase-protected. Returns how it was protected.
pub fn open_file(
    path: &Path,
    identity_paths: &[PathBuf],
) -> Result<(BackupDocument, &'static str)> {
    let label = path.display().to_string();
    let mut data = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("cannot open backup file {label}"))?
        .take(crypt::MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read backup file {label}"))?;
    let opened = crypt::open(&data, &label)?;
    let (plaintext, how) = if opened.is_passphrase() {
        if !identity_paths.is_empty() {
            eprintln!("note: {label} is protected by a passphrase, not by keys; -i is not needed");
        }
        let pass = passphrase::ask_existing(&format!("Passphrase for {label}: "))?;
        (opened.decrypt_with_passphrase(&pass)?, "passphrase")
    } else {
        let ids = crypt::identities(identity_paths)?;
        (opened.decrypt_with_identities(&ids)?, "keys")
    };
    tracing::debug!(file = %label, bytes = plaintext.len(), how, "decrypted");
    let doc = BackupDocument::parse(&plaintext).map_err(|e| anyhow!("{label}: {e}"))?;
    Ok((doc, how))
}
