//! What the Vault stand-in keeps on disk, and the barrier cryptography around it.
//!
//! Contract followed: Vault's Shamir seal as described in
//! `../shared/reference/platform-facts.md` §1 (`PUT /sys/unseal`: a wrong-but-well-formed
//! share set fails with `... failed to decrypt keys from storage: cipher: message
//! authentication failed`). As in Vault since 1.3, the combined unseal key is an AES-GCM key
//! that decrypts the *stored root key*, and the root key decrypts everything behind the
//! barrier (here: the hashes of the valid tokens). Only the seal configuration is plaintext.
//!
//! The whole state is one JSON file, [`STATE_FILE`] in the data dir, written atomically
//! (temp file, fsync, rename, fsync of the directory). Killing the process at any moment is a
//! power loss: the next start finds either the old or the new file, never half of one. This
//! file is what the Longhorn stand-in backs up and restores.
//!
//! Left out: Vault's real storage layout (`core/seal-config`, `core/hsm/barrier-unseal-keys`,
//! the keyring with key terms), so real Vault data directories are not readable and vice versa.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce};
use anyhow::Context;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Name of the state file inside the data dir.
pub const STATE_FILE: &str = "lab-vault.json";

/// Version of [`Stored`]'s layout.
const FORMAT: u32 = 1;

/// Vault's `cipher: message authentication failed` (Go's crypto/cipher wording).
pub const AUTH_FAILED: &str = "cipher: message authentication failed";

/// The seal configuration Vault stores in plaintext (`core/seal-config`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SealConfig {
    #[serde(rename = "type")]
    pub kind: String,
    pub secret_shares: usize,
    pub secret_threshold: usize,
    pub stored_shares: usize,
}

/// The persisted state of an initialised Vault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub format: u32,
    pub seal_config: SealConfig,
    /// base64(nonce ‖ AES-GCM(unseal key, root key)).
    pub stored_keys: String,
    /// base64(nonce ‖ AES-GCM(root key, JSON [`Keyring`])).
    pub barrier: String,
    pub cluster_name: String,
    pub cluster_id: String,
}

/// What lives behind the barrier.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Keyring {
    /// Lowercase hex SHA-256 of every valid token (only root tokens here).
    pub token_sha256: Vec<String>,
}

impl Stored {
    pub fn new(
        seal_config: SealConfig,
        unseal_key: &[u8],
        root_key: &[u8],
        keyring: &Keyring,
        cluster_name: String,
        cluster_id: String,
    ) -> Stored {
        Stored {
            format: FORMAT,
            seal_config,
            stored_keys: seal(unseal_key, root_key),
            barrier: seal(
                root_key,
                &serde_json::to_vec(keyring).expect("keyring serialises"),
            ),
            cluster_name,
            cluster_id,
        }
    }

    /// Decrypts the stored root key with a combined unseal key. The error text is Vault's
    /// (`invalid key: ...`), without the caller's prefix.
    pub fn root_key(&self, unseal_key: &[u8]) -> Result<Vec<u8>, String> {
        open(unseal_key, &self.stored_keys).map_err(|e| match e {
            OpenError::KeySize(n) => {
                format!("invalid key: failed to setup unseal key: crypto/aes: invalid key size {n}")
            }
            OpenError::Auth => {
                format!("invalid key: failed to decrypt keys from storage: {AUTH_FAILED}")
            }
        })
    }

    pub fn keyring(&self, root_key: &[u8]) -> Result<Keyring, String> {
        let plain = open(root_key, &self.barrier).map_err(|_| {
            format!("failed to unseal barrier: failed to check for keyring: {AUTH_FAILED}")
        })?;
        serde_json::from_slice(&plain).map_err(|e| format!("failed to decode keyring: {e}"))
    }
}

pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_FILE)
}

/// Reads the state file; `None` when the data dir holds no Vault yet.
pub fn load(data_dir: &Path) -> anyhow::Result<Option<Stored>> {
    let path = state_path(data_dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let stored: Stored = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a lab-vault state file (corrupt or from another program)",
            path.display()
        )
    })?;
    anyhow::ensure!(
        stored.format == FORMAT,
        "{}: unsupported lab-vault state format {}",
        path.display(),
        stored.format
    );
    Ok(Some(stored))
}

/// Writes the state file atomically: temp file, fsync, rename, fsync of the directory.
pub fn save(data_dir: &Path, stored: &Stored) -> anyhow::Result<()> {
    fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let path = state_path(data_dir);
    let tmp = data_dir.join(format!(".{STATE_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(stored)?;
    {
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut out);
    out
}

/// A UUID-shaped random identifier, as hashicorp/go-uuid makes them.
pub fn uuid() -> String {
    let b = hex::encode(random_bytes(16));
    format!(
        "{}-{}-{}-{}-{}",
        &b[0..8],
        &b[8..12],
        &b[12..16],
        &b[16..20],
        &b[20..32]
    )
}

enum OpenError {
    KeySize(usize),
    Auth,
}

fn seal(key: &[u8], plain: &[u8]) -> String {
    let cipher = Aes256Gcm::new_from_slice(key).expect("barrier keys are 32 bytes");
    let nonce = random_bytes(12);
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), plain)
        .expect("AES-GCM encryption cannot fail");
    let mut blob = nonce;
    blob.extend_from_slice(&ct);
    base64::engine::general_purpose::STANDARD.encode(blob)
}

fn open(key: &[u8], blob: &str) -> Result<Vec<u8>, OpenError> {
    let blob = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| OpenError::Auth)?;
    if blob.len() < 12 {
        return Err(OpenError::Auth);
    }
    let (nonce, ct) = blob.split_at(12);
    let nonce = Nonce::from_slice(nonce);
    // Go's AES accepts 16-, 24- and 32-byte keys; any of them other than the right one
    // fails authentication, any other length fails key setup.
    match key.len() {
        32 => Aes256Gcm::new_from_slice(key)
            .map_err(|_| OpenError::KeySize(32))?
            .decrypt(nonce, ct)
            .map_err(|_| OpenError::Auth),
        16 => Aes128Gcm::new_from_slice(key)
            .map_err(|_| OpenError::KeySize(16))?
            .decrypt(nonce, ct)
            .map_err(|_| OpenError::Auth),
        24 => Err(OpenError::Auth),
        n => Err(OpenError::KeySize(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SealConfig {
        SealConfig {
            kind: "shamir".into(),
            secret_shares: 1,
            secret_threshold: 1,
            stored_shares: 1,
        }
    }

    #[test]
    fn vault_state_barrier_opens_only_with_its_key() {
        let unseal = random_bytes(32);
        let root = random_bytes(32);
        let ring = Keyring {
            token_sha256: vec!["ab".into()],
        };
        let s = Stored::new(config(), &unseal, &root, &ring, "c".into(), uuid());
        assert_eq!(s.root_key(&unseal).unwrap(), root);
        assert_eq!(
            s.keyring(&root).unwrap().token_sha256,
            vec!["ab".to_string()]
        );
        let err = s.root_key(&random_bytes(32)).unwrap_err();
        assert!(err.contains("message authentication failed"), "{err}");
        let err = s.root_key(&random_bytes(15)).unwrap_err();
        assert!(err.contains("invalid key size 15"), "{err}");
    }

    #[test]
    fn vault_state_save_load_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let unseal = random_bytes(32);
        let root = random_bytes(32);
        let s = Stored::new(
            config(),
            &unseal,
            &root,
            &Keyring::default(),
            "c".into(),
            uuid(),
        );
        save(dir.path(), &s).unwrap();
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back.seal_config, s.seal_config);
        assert_eq!(back.root_key(&unseal).unwrap(), root);
        fs::write(state_path(dir.path()), b"{not json").unwrap();
        assert!(load(dir.path()).is_err());
    }

    #[test]
    fn vault_state_save_replaces_the_file_by_rename() {
        // A crash mid-save must leave the old file whole: the new content is written to a
        // temp file and renamed over it, so the state file gets a new inode each time.
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let s = Stored::new(
            config(),
            &random_bytes(32),
            &random_bytes(32),
            &Keyring::default(),
            "c".into(),
            uuid(),
        );
        save(dir.path(), &s).unwrap();
        let first = fs::metadata(state_path(dir.path())).unwrap().ino();
        save(dir.path(), &s).unwrap();
        let second = fs::metadata(state_path(dir.path())).unwrap().ino();
        assert_ne!(
            first, second,
            "the state file is replaced, never rewritten in place"
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(STATE_FILE)],
            "no temp file left behind"
        );
    }
}
