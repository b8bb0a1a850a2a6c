//! age encryption and decryption of backup documents, with errors an operator can act on.
//!
//! Recipients and identities follow the age CLI: `age1…` X25519 recipients, SSH public keys
//! (ssh-ed25519, ssh-rsa), recipients files with one per line and `#` comments, identity files
//! with `AGE-SECRET-KEY-1…` lines, or an SSH private key (encrypted ones ask on the terminal).
//! A passphrase (scrypt) must be the only recipient of a file, so it has its own function.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use age::secrecy::SecretString;
use anyhow::{anyhow, bail, Context, Result};
use zeroize::Zeroizing;

use super::passphrase;
use crate::secret::SecretText;

/// scrypt work factor (log2 N) for every passphrase file: Go age's default. Fixed, because
/// the age crate would otherwise tune it to this machine's speed (a slow build picks less).
pub const SCRYPT_WORK_FACTOR: u8 = 18;
/// Highest work factor accepted when decrypting (Go age's limit): bounds a hostile file's cost.
pub const SCRYPT_MAX_WORK_FACTOR: u8 = 22;
/// No backup document comes anywhere near this; bigger input is not a backup.
pub const MAX_FILE_BYTES: usize = 1 << 20;

const BINARY_MAGIC: &[u8] = b"age-encryption.org/";
const ARMOR_BEGIN: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";

/// A recipient with the text that names it (public, safe to print).
pub struct NamedRecipient {
    pub recipient: Box<dyn age::Recipient + Send>,
    pub name: String,
}

impl std::fmt::Debug for NamedRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Parses one recipient: `age1…` or an SSH public key line. Errors never echo text that
/// could be a private key.
pub fn parse_recipient(text: &str) -> Result<NamedRecipient> {
    let s = text.trim();
    if s.starts_with("AGE-SECRET-KEY-") || s.contains("PRIVATE KEY") {
        bail!(
            "a private key was given where a recipient (public key) belongs; \
             get the recipient with `age-keygen -y KEYFILE` or use the `.pub` SSH key"
        );
    }
    if s.starts_with("age1") {
        let r = age::x25519::Recipient::from_str(s).map_err(|_| {
            anyhow!(
                "`{s}` is not a valid age X25519 recipient (plugin recipients such as \
                 age1yubikey1… are not supported)"
            )
        })?;
        return Ok(NamedRecipient {
            name: r.to_string(),
            recipient: Box::new(r),
        });
    }
    if s.starts_with("ssh-") || s.starts_with("ecdsa-") || s.starts_with("sk-") {
        use age::ssh::ParseRecipientKeyError as E;
        let key_type = s.split_whitespace().next().unwrap_or("");
        let r = age::ssh::Recipient::from_str(s).map_err(|e| match e {
            E::RsaModulusTooSmall => anyhow!("this ssh-rsa key is shorter than 2048 bits; age refuses it as too weak"),
            E::RsaModulusTooLarge => anyhow!("this ssh-rsa key is larger than age supports"),
            E::Unsupported(t) => anyhow!("SSH key type {t} cannot be used with age; use an ssh-ed25519 or ssh-rsa key, or an age1… recipient"),
            E::Ignore | E::Invalid(_) => anyhow!("not a valid {key_type} public key line (expected `{key_type} AAAA… [comment]`)"),
        })?;
        return Ok(NamedRecipient {
            name: r.to_string(),
            recipient: Box::new(r),
        });
    }
    bail!("not a recipient: expected an age public key (age1…) or an SSH public key (ssh-ed25519 …, ssh-rsa …)")
}

/// Reads a recipients file (age CLI `-R` format): one recipient per line, `#` comments.
pub fn read_recipients_file(path: &Path) -> Result<Vec<NamedRecipient>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read recipients file {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(
            parse_recipient(line).with_context(|| format!("{} line {}", path.display(), n + 1))?,
        );
    }
    if out.is_empty() {
        bail!("recipients file {} lists no recipients", path.display());
    }
    Ok(out)
}

/// Every `-r` (numbered in errors) and every `-R FILE`, parsed: the one reading of the
/// recipient flags for export, rebuild's `--key-out` and rotation.
pub fn recipients(given: &[String], files: &[PathBuf]) -> Result<Vec<NamedRecipient>> {
    let mut out = Vec::new();
    for (n, r) in given.iter().enumerate() {
        out.push(parse_recipient(r).with_context(|| format!("-r recipient #{}", n + 1))?);
    }
    for f in files {
        out.extend(read_recipients_file(f)?);
    }
    Ok(out)
}

/// The identities of every `-i FILE`, in order.
pub fn identities(files: &[PathBuf]) -> Result<Vec<Box<dyn age::Identity>>> {
    let mut out = Vec::new();
    for f in files {
        out.extend(load_identity_file(f)?);
    }
    Ok(out)
}

/// Loads the identities of one `-i FILE`: an age identity file or an SSH private key.
pub fn load_identity_file(path: &Path) -> Result<Vec<Box<dyn age::Identity>>> {
    let data = Zeroizing::new(
        std::fs::read(path)
            .with_context(|| format!("cannot read identity file {}", path.display()))?,
    );
    let shown = path.display();
    let text = std::str::from_utf8(&data)
        .map_err(|_| anyhow!("{shown} is not an identity file (it is binary data)"))?;
    let head = text.trim_start();
    if head.starts_with("age-encryption.org/") || head.starts_with("-----BEGIN AGE ENCRYPTED FILE")
    {
        bail!(
            "{shown} is a passphrase-protected age identity file, which rebox cannot use yet; \
             pass an unencrypted identity or SSH private key"
        );
    }
    if head.starts_with("ssh-") || head.starts_with("ecdsa-") || head.starts_with("sk-") {
        bail!("{shown} is an SSH public key; -i needs the private key (the same file name without .pub)");
    }
    if head.starts_with("-----BEGIN") {
        let id = age::ssh::Identity::from_buffer(text.as_bytes(), Some(shown.to_string()))
            .map_err(|_| anyhow!("{shown} is not an SSH private key age can read"))?;
        return match id {
            age::ssh::Identity::Unsupported(k) => Err(anyhow!(
                "{shown}: this SSH key cannot be used with age ({k:?}); use an ssh-ed25519 or ssh-rsa key"
            )),
            age::ssh::Identity::Encrypted(_) => Ok(vec![Box::new(id.with_callbacks(TtyCallbacks))]),
            age::ssh::Identity::Unencrypted(_) => Ok(vec![Box::new(id)]),
        };
    }
    let ids = age::IdentityFile::from_buffer(text.as_bytes())
        .with_context(|| format!("{shown} is not an age identity file"))?
        .into_identities()
        .with_context(|| format!("cannot use the identities in {shown}"))?;
    if ids.is_empty() {
        bail!("{shown} holds no identity (expected AGE-SECRET-KEY-1… lines or an SSH private key)");
    }
    Ok(ids)
}

/// Asks on the terminal for an encrypted SSH key's passphrase.
#[derive(Clone)]
struct TtyCallbacks;

impl age::Callbacks for TtyCallbacks {
    fn display_message(&self, message: &str) {
        eprintln!("{message}");
    }
    fn confirm(&self, _: &str, _: &str, _: Option<&str>) -> Option<bool> {
        None
    }
    fn request_public_string(&self, _: &str) -> Option<String> {
        None
    }
    fn request_passphrase(&self, description: &str) -> Option<SecretString> {
        let p = passphrase::ask_existing(&format!("{description}: ")).ok()?;
        Some(to_age_secret(&p))
    }
}

/// age wants its own secrecy type. `to_owned` allocates exactly, so no reallocation leaves
/// an unwiped copy behind.
fn to_age_secret(p: &SecretText) -> SecretString {
    SecretString::from(p.expose().to_owned())
}

/// Encrypts to public keys (any mix of X25519 and SSH).
pub fn encrypt_to_recipients(
    plaintext: &[u8],
    recipients: &[NamedRecipient],
    armor: bool,
) -> Result<Vec<u8>> {
    let enc = age::Encryptor::with_recipients(
        recipients
            .iter()
            .map(|r| r.recipient.as_ref() as &dyn age::Recipient),
    )
    .map_err(|e| anyhow!("cannot encrypt to these recipients: {e}"))?;
    finish(enc, plaintext, armor)
}

/// Encrypts with a passphrase at the fixed work factor.
pub fn encrypt_with_passphrase(
    plaintext: &[u8],
    pass: &SecretText,
    armor: bool,
) -> Result<Vec<u8>> {
    let mut r = age::scrypt::Recipient::new(to_age_secret(pass));
    r.set_work_factor(SCRYPT_WORK_FACTOR);
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        .map_err(|e| anyhow!("cannot encrypt with a passphrase: {e}"))?;
    finish(enc, plaintext, armor)
}

fn finish(enc: age::Encryptor, plaintext: &[u8], armor: bool) -> Result<Vec<u8>> {
    let format = if armor {
        Format::AsciiArmor
    } else {
        Format::Binary
    };
    let mut out = Vec::new();
    let armored = ArmoredWriter::wrap_output(&mut out, format)?;
    let mut w = enc.wrap_output(armored)?;
    w.write_all(plaintext)?;
    w.finish()?.finish()?;
    Ok(out)
}

/// The ASCII-armored form of an age file (same ciphertext; armor is only an encoding).
pub fn to_armor(age_file: &[u8]) -> Result<String> {
    if is_armored(age_file) {
        return Ok(String::from_utf8(age_file.to_vec())?);
    }
    let mut out = Vec::new();
    let mut w = ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor)?;
    w.write_all(age_file)?;
    w.finish()?;
    Ok(String::from_utf8(out)?)
}

fn is_armored(data: &[u8]) -> bool {
    data.trim_ascii_start().starts_with(ARMOR_BEGIN)
}

/// An age file whose header has been read; decrypt it with a passphrase or identities.
pub struct Opened<'a> {
    label: String,
    decryptor: age::Decryptor<ArmoredReader<std::io::BufReader<&'a [u8]>>>,
    size: usize,
}

/// Reads the age header of `data` (armored or binary). `label` names the file in errors.
pub fn open<'a>(data: &'a [u8], label: &str) -> Result<Opened<'a>> {
    let head = data.trim_ascii_start();
    if !head.starts_with(BINARY_MAGIC) && !head.starts_with(ARMOR_BEGIN) {
        bail!(
            "{label} is not an age-encrypted file (it starts with neither `age-encryption.org/v1` \
             nor `-----BEGIN AGE ENCRYPTED FILE-----`); check that you picked the backup file"
        );
    }
    if data.len() > MAX_FILE_BYTES {
        bail!("{label} is {} bytes, far too large for a rebox backup; check that you picked the backup file", data.len());
    }
    let decryptor =
        age::Decryptor::new_buffered(ArmoredReader::new(data)).map_err(|e| match e {
            age::DecryptError::UnknownFormat => anyhow!(
                "{label} is damaged, or uses an age format newer than v1: its header's version line \
             is not `age-encryption.org/v1`; use another copy of the backup, or try the stock `age -d`"
            ),
            other => anyhow!(
                "{label} is damaged: its age header cannot be read ({}); use another copy of the \
             backup (another stick, or the printed .paper.txt)",
                first_line(&other.to_string())
            ),
        })?;
    Ok(Opened {
        label: label.into(),
        decryptor,
        size: data.len(),
    })
}

impl Opened<'_> {
    /// True when the file is protected by a passphrase (scrypt), not by keys.
    pub fn is_passphrase(&self) -> bool {
        self.decryptor.is_scrypt()
    }

    pub fn decrypt_with_passphrase(self, pass: &SecretText) -> Result<Zeroizing<Vec<u8>>> {
        let mut id = age::scrypt::Identity::new(to_age_secret(pass));
        id.set_max_work_factor(SCRYPT_MAX_WORK_FACTOR);
        self.decrypt(&[Box::new(id)], true)
    }

    pub fn decrypt_with_identities(
        self,
        ids: &[Box<dyn age::Identity>],
    ) -> Result<Zeroizing<Vec<u8>>> {
        if ids.is_empty() {
            bail!(
                "{} is encrypted to age/SSH keys; pass the matching private key with -i \
                 (e.g. -i ~/.ssh/id_ed25519 or -i key.txt)",
                self.label
            );
        }
        self.decrypt(ids, false)
    }

    fn decrypt(
        self,
        ids: &[Box<dyn age::Identity>],
        passphrase: bool,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let label = self.label;
        let size = self.size;
        let mut reader = self
            .decryptor
            .decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::DecryptionFailed if passphrase => anyhow!(
                    "wrong passphrase for {label} (or the file was modified); passphrases are case-sensitive, try again"
                ),
                age::DecryptError::NoMatchingKeys => anyhow!(
                    "none of the identities given with -i can decrypt {label}: it was encrypted to \
                     other keys (or its header is damaged); try the matching private key"
                ),
                age::DecryptError::InvalidMac | age::DecryptError::InvalidHeader => anyhow!(
                    "{label} is damaged: its header fails the integrity check; use another copy of the backup"
                ),
                age::DecryptError::ExcessiveWork { required, .. } => anyhow!(
                    "{label} asks for scrypt work factor {required}, above the {SCRYPT_MAX_WORK_FACTOR} rebox accepts; \
                     it was not made by rebox or age with normal settings"
                ),
                age::DecryptError::KeyDecryptionFailed => anyhow!(
                    "cannot unlock the SSH private key given with -i (wrong passphrase?)"
                ),
                other => anyhow!(
                    "cannot decrypt {label}: {}; if this persists, use another copy of the backup",
                    first_line(&other.to_string())
                ),
            })?;
        // Plaintext is shorter than the file, so this capacity means no reallocation
        // (which would leave an unwiped copy of the secret in freed memory).
        let mut out = Zeroizing::new(Vec::with_capacity(size + 64));
        reader.read_to_end(&mut out).map_err(|_| {
            anyhow!(
                "{label} is damaged: its encrypted content fails the integrity check (truncated \
                 or modified); use another copy of the backup"
            )
        })?;
        Ok(out)
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim_end_matches('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_x25519_round_trip_armored_and_binary() {
        let id = age::x25519::Identity::generate();
        let r = parse_recipient(&id.to_public().to_string()).unwrap();
        for armor in [true, false] {
            let ct = encrypt_to_recipients(b"doc", std::slice::from_ref(&r), armor).unwrap();
            assert_eq!(is_armored(&ct), armor);
            let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(id.clone())];
            let pt = open(&ct, "f")
                .unwrap()
                .decrypt_with_identities(&ids)
                .unwrap();
            assert_eq!(&pt[..], b"doc");
        }
    }

    #[test]
    fn key_passphrase_file_uses_work_factor_18() {
        let p = SecretText::new("a long test passphrase".into());
        let ct = encrypt_with_passphrase(b"doc", &p, false).unwrap();
        // The scrypt stanza is "-> scrypt SALT 18".
        let header = String::from_utf8_lossy(&ct[..120]).to_string();
        assert!(
            header.contains("-> scrypt ") && header.contains(" 18\n"),
            "{header}"
        );
        let o = open(&ct, "f").unwrap();
        assert!(o.is_passphrase());
        assert_eq!(&o.decrypt_with_passphrase(&p).unwrap()[..], b"doc");
        let wrong = SecretText::new("another passphrase!".into());
        let err = open(&ct, "f")
            .unwrap()
            .decrypt_with_passphrase(&wrong)
            .unwrap_err();
        assert!(err.to_string().contains("wrong passphrase"), "{err}");
    }

    #[test]
    fn key_recipient_parsing_refuses_private_keys_and_junk() {
        let id = age::x25519::Identity::generate();
        let secret = id.to_string();
        let err = parse_recipient(age::secrecy::ExposeSecret::expose_secret(&secret)).unwrap_err();
        assert!(err.to_string().contains("private key"));
        assert!(!err.to_string().contains("AGE-SECRET"));
        assert!(parse_recipient("hello").is_err());
        assert!(parse_recipient("age1notvalid").is_err());
        assert!(parse_recipient("ecdsa-sha2-nistp256 AAAA").is_err());
    }

    #[test]
    fn key_armor_of_binary_decrypts_the_same() {
        let id = age::x25519::Identity::generate();
        let r = parse_recipient(&id.to_public().to_string()).unwrap();
        let ct = encrypt_to_recipients(b"doc", &[r], false).unwrap();
        let armored = to_armor(&ct).unwrap();
        let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(id)];
        let pt = open(armored.as_bytes(), "f")
            .unwrap()
            .decrypt_with_identities(&ids)
            .unwrap();
        assert_eq!(&pt[..], b"doc");
    }
}
