//! Writing the offline backup (`rebox key export`): the output files decided and created
//! first (an unwritable directory or an existing file fails before any key or passphrase is
//! asked for), then for each: encrypt, write, read back and decrypt, check every fingerprint,
//! the printable page; only when every file checks out are they all committed.
//!
//! [`prepare`] does everything that needs neither the key nor a passphrase; the caller then
//! fetches the shares (from the cluster or stdin) and hands them to [`Prepared::write`].

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::crypt::{self, NamedRecipient};
use super::document::Summary;
use super::output::Pending;
use super::{passphrase, BackupDocument};
use crate::secret::SecretText;

/// What the operator asked for (flags and rebox.toml), before anything is read or written.
pub struct Options<'a> {
    pub cluster: String,
    pub output: &'a Path,
    pub recipients: &'a [String],
    pub recipients_files: &'a [PathBuf],
    pub identity_files: &'a [PathBuf],
    pub passphrase: bool,
    pub paper: bool,
    pub force: bool,
    /// ASCII armor (else binary age).
    pub armor: bool,
    pub threshold: Option<u32>,
    pub share_count: Option<u32>,
    pub extras: Vec<(String, SecretText)>,
}

/// An export whose every check that needs no key has passed, with its temp files made.
pub struct Prepared {
    cluster: String,
    recipients: Vec<NamedRecipient>,
    identities: Vec<Box<dyn age::Identity>>,
    identity_files: Vec<PathBuf>,
    passphrase: bool,
    armor: bool,
    threshold: Option<u32>,
    share_count: Option<u32>,
    extras: Vec<(String, SecretText)>,
    targets: Vec<Target>,
}

/// Checks the protection and the outputs and creates the temp files: everything that can
/// fail without the key or a passphrase fails here.
pub fn prepare(o: Options<'_>) -> Result<Prepared> {
    let recipients = crypt::recipients(o.recipients, o.recipients_files)?;
    if recipients.is_empty() && !o.passphrase {
        bail!(
            "no recipients: pass -r age1… or -R FILE (e.g. -R ~/.ssh/id_ed25519.pub) to encrypt \
             to keys, and/or -p for a passphrase; nothing was written"
        );
    }
    let identities = crypt::identities(o.identity_files)?;
    if !o.identity_files.is_empty() && recipients.is_empty() {
        eprintln!("note: -i is only used to read back key-encrypted files; the passphrase file is checked with the passphrase");
    }
    let targets = plan(
        o.output,
        o.passphrase,
        !recipients.is_empty(),
        o.paper,
        o.force,
    )?;
    Ok(Prepared {
        cluster: o.cluster,
        recipients,
        identities,
        identity_files: o.identity_files.to_vec(),
        passphrase: o.passphrase,
        armor: o.armor,
        threshold: o.threshold,
        share_count: o.share_count,
        extras: o.extras,
        targets,
    })
}

impl Prepared {
    /// Builds the document from `shares`, asks the new passphrase (if any), then encrypts,
    /// writes, reads back and commits every file. Returns the document's summary and each
    /// file with how it was checked.
    pub fn write(self, shares: Vec<SecretText>) -> Result<(Summary, Vec<(String, String)>)> {
        let given = shares.len() as u32;
        let share_count = self
            .share_count
            .unwrap_or(given.max(self.threshold.unwrap_or(0)));
        let threshold = self.threshold.unwrap_or(given);
        let doc = BackupDocument::new(&self.cluster, threshold, share_count, shares, self.extras)
            .context("cannot build the backup document; nothing was written")?;
        if given < threshold {
            eprintln!(
                "warning: this backup holds {given} share(s) but Vault needs {threshold}; \
                 it cannot unseal Vault on its own"
            );
        }
        let text = doc.to_text()?;
        // What we write must be what we can read: parse our own output before encrypting it.
        let expected = BackupDocument::parse(text.as_bytes())
            .map_err(|e| anyhow!("internal error, refusing to write: {e}"))?
            .summary();
        tracing::info!(cluster = %self.cluster, shares = given, threshold, share_count, "backup document built");
        let pass = if self.passphrase {
            Some(passphrase::ask_new("the backup file")?)
        } else {
            None
        };
        let reports = write(
            text.as_bytes(),
            &expected,
            self.targets,
            &Protect {
                recipients: &self.recipients,
                pass: pass.as_ref(),
                identities: &self.identities,
                identity_files: &self.identity_files,
                armor: self.armor,
            },
        )?;
        Ok((expected, reports))
    }
}

/// How one output file is protected.
enum Protection {
    Passphrase,
    Keys,
}

/// One file `export` will write, with its optional paper page.
struct Target {
    protection: Protection,
    file: Pending,
    paper: Option<Pending>,
}

/// Decides the output files and creates their temp files (so an unwritable directory or an
/// existing file is reported before the key or a passphrase is asked for).
fn plan(
    output: &Path,
    passphrase: bool,
    keys: bool,
    paper: bool,
    force: bool,
) -> Result<Vec<Target>> {
    let mut plan = Vec::new();
    match (passphrase, keys) {
        (true, true) => {
            plan.push((Protection::Passphrase, sibling(output, "pass")));
            plan.push((Protection::Keys, sibling(output, "keys")));
        }
        (true, false) => plan.push((Protection::Passphrase, output.to_path_buf())),
        _ => plan.push((Protection::Keys, output.to_path_buf())),
    }
    plan.into_iter()
        .map(|(protection, path)| {
            let paper = if paper {
                let mut p = path.clone().into_os_string();
                p.push(".paper.txt");
                Some(Pending::create(Path::new(&p), force)?)
            } else {
                None
            };
            Ok(Target {
                protection,
                file: Pending::create(&path, force)?,
                paper,
            })
        })
        .collect()
}

/// `vault-key.age` → `vault-key.pass.age` / `vault-key.keys.age`.
fn sibling(output: &Path, kind: &str) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".age").unwrap_or(&name);
    output.with_file_name(format!("{stem}.{kind}.age"))
}

/// What the files are encrypted to, and what proves they decrypt.
struct Protect<'a> {
    recipients: &'a [NamedRecipient],
    pass: Option<&'a SecretText>,
    identities: &'a [Box<dyn age::Identity>],
    /// The identity files, for the recovery command on the printed page.
    identity_files: &'a [PathBuf],
    armor: bool,
}

/// Encrypts `text` (the document whose summary is `expected`) into every target, proves each
/// by reading it back, then commits them all. Returns each file with how it was checked.
fn write(
    text: &[u8],
    expected: &Summary,
    mut targets: Vec<Target>,
    protect: &Protect<'_>,
) -> Result<Vec<(String, String)>> {
    let Protect {
        recipients,
        pass,
        identities,
        identity_files,
        armor,
    } = *protect;
    let mut reports = Vec::new();
    for t in &mut targets {
        let label = t.file.path().display().to_string();
        let ciphertext = match t.protection {
            Protection::Passphrase => {
                let p = pass.expect("a passphrase target comes with a passphrase");
                crypt::encrypt_with_passphrase(text, p, armor)?
            }
            Protection::Keys => crypt::encrypt_to_recipients(text, recipients, armor)?,
        };
        tracing::debug!(file = %label, bytes = ciphertext.len(), armor, "encrypted");
        t.file.write(&ciphertext)?;
        let back = t.file.read_back()?;
        if back != ciphertext {
            bail!("{label}: what was read back differs from what was written (failing disk or stick?); nothing was written");
        }
        let check = read_back_check(&back, &label, t, pass, identities, expected)?;
        tracing::info!(file = %label, check = %check, "read back");
        if let Some(paper) = &t.paper {
            let page = paper_page(t, &back, expected, recipients, identity_files)?;
            paper.write(page.as_bytes())?;
            if paper.read_back()? != page.as_bytes() {
                bail!(
                    "{}: read-back mismatch; nothing was written",
                    paper.path().display()
                );
            }
        }
        reports.push((label, check));
    }
    for t in targets {
        let paper = t.paper;
        t.file.commit()?;
        if let Some(p) = paper {
            let shown = p.path().display().to_string();
            p.commit()?;
            eprintln!(
                "wrote {shown} (printable page; contains only encrypted text and fingerprints)"
            );
        }
    }
    for (label, check) in &reports {
        eprintln!("wrote {label}: {check}");
    }
    Ok(reports)
}

/// Decrypts what reached the disk, where the operator's passphrase or identities allow,
/// and checks that it holds exactly the document we meant to write.
fn read_back_check(
    data: &[u8],
    label: &str,
    t: &Target,
    pass: Option<&SecretText>,
    ids: &[Box<dyn age::Identity>],
    expected: &Summary,
) -> Result<String> {
    let opened = crypt::open(data, label)?;
    let plaintext = match t.protection {
        Protection::Passphrase => {
            opened.decrypt_with_passphrase(pass.expect("passphrase target has a passphrase"))?
        }
        Protection::Keys if ids.is_empty() => {
            return Ok("read back; its age header is valid, but it was not decrypted (pass -i \
                       with a matching private key to prove that it decrypts)"
                .into())
        }
        Protection::Keys => opened.decrypt_with_identities(ids).map_err(|e| {
            anyhow!("{e}\nthe identities given with -i do not match the -r/-R recipients; nothing was written")
        })?,
    };
    let doc = BackupDocument::parse(&plaintext)
        .map_err(|e| anyhow!("{label}: {e}; nothing was written"))?;
    let got = doc.summary();
    if got
        .shares
        .iter()
        .map(|f| &f.sha256)
        .ne(expected.shares.iter().map(|f| &f.sha256))
        || got
            .extra
            .iter()
            .map(|f| &f.sha256)
            .ne(expected.extra.iter().map(|f| &f.sha256))
    {
        bail!("{label}: decrypted content differs from what was meant to be written; nothing was written");
    }
    Ok("read back, decrypted and every fingerprint checked".into())
}

/// The printable page: encrypted text, fingerprints, date and the recovery command.
fn paper_page(
    t: &Target,
    data: &[u8],
    s: &Summary,
    recipients: &[NamedRecipient],
    ids: &[PathBuf],
) -> Result<String> {
    let name = t
        .file
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (protected, command) = match t.protection {
        Protection::Passphrase => ("a passphrase".to_string(), format!("age -d {name}")),
        Protection::Keys => {
            let who: Vec<&str> = recipients.iter().map(|r| r.name.as_str()).collect();
            let id = ids
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "YOUR_PRIVATE_KEY_FILE".into());
            (
                format!("these keys: {}", who.join(", ")),
                format!("age -d -i {id} {name}"),
            )
        }
    };
    let mut out = String::new();
    use std::fmt::Write as _;
    writeln!(
        out,
        "REBOX OFFLINE BACKUP OF THE VAULT UNSEAL KEY (printed copy)"
    )?;
    writeln!(
        out,
        "============================================================"
    )?;
    writeln!(out, "File:       {name}")?;
    writeln!(out, "Cluster:    {}", s.cluster)?;
    writeln!(out, "Created:    {} by {}", s.created_at, s.created_by)?;
    writeln!(out, "Encrypted:  with age, to {protected}")?;
    writeln!(
        out,
        "Unseal:     {} of {} shares needed; this backup holds {}",
        s.threshold,
        s.share_count,
        s.shares.len()
    )?;
    writeln!(
        out,
        "\nSHA-256 fingerprints (compare the recovered key with these):"
    )?;
    for f in s.shares.iter().chain(&s.extra) {
        writeln!(out, "  {:<24} {}", f.name, f.sha256)?;
    }
    writeln!(out, "\nTo recover the key with only the stock age tool:")?;
    writeln!(
        out,
        "  1. Type (or scan) everything from the BEGIN line to the END line below,"
    )?;
    writeln!(out, "     both included, into a file named {name}.")?;
    writeln!(out, "  2. Run:  {command}")?;
    writeln!(
        out,
        "     It prints a TOML document; each `key = \"…\"` line is an unseal key share."
    )?;
    writeln!(
        out,
        "     (Or: rebox key verify {name}  to check it without printing the key.)"
    )?;
    writeln!(out)?;
    out.push_str(&crypt::to_armor(data)?);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}
