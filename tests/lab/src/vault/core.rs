//! The Vault stand-in's core: seal state, unseal progress, init, seal, rekey and its
//! verification step. No HTTP here; [`super::api`] maps requests onto these methods.
//!
//! Contract followed: `../shared/reference/platform-facts.md` §1 "HashiCorp Vault — seal
//! lifecycle" (sections `PUT|POST /v1/sys/unseal`, `PUT|POST /v1/sys/init`, "Rekey"), and
//! where that card is silent, upstream `vault/core.go` (`unsealFragment`, `recordUnsealPart`,
//! `getUnsealKey`), `vault/rekey.go` (`RekeyInit`, `BarrierRekeyUpdate`, `RekeyVerify`,
//! `RekeyCancel`, `RekeyVerifyRestart`) and `SealConfig.Validate`. Error texts and status
//! codes are Vault's; the order of the checks is Vault's, so the first refusal a client sees
//! is the one a real Vault would give.
//!
//! Where the card and current upstream code differ, the code wins and the difference is
//! noted: a wrong set of OLD shares at the rekey threshold answers **500** `failed to read
//! root key: invalid key: failed to decrypt keys from storage: cipher: message authentication
//! failed` (Shamir seals with a stored root key, Vault ≥ 1.3), not the 400 `... key
//! verification failed` of legacy seals; either way the collected shares are discarded.
//!
//! Left out: auto-unseal / recovery keys, seal migration, PGP-encrypted shares (refused with a
//! clear lab message), `backup`, HA/standby, namespaces, tokens other than the root token.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::shamir;
use super::state::{self, Keyring, SealConfig, Stored};

/// Version string the stand-in reports (a Vault with the CVE-2025-4656 rekey-cancel rule).
pub const VERSION: &str = "1.21.0";
const BUILD_DATE: &str = "2025-10-21T19:40:44Z";
/// AES-256 barrier key length; Vault's `BarrierKeyLength()` is (16, 32 + overhead).
pub const KEY_MIN: usize = 16;
pub const KEY_MAX: usize = 32 + shamir::SHARE_OVERHEAD;
/// A rekey younger than this needs its nonce to be cancelled (Vault 1.20+).
const CANCEL_NONCE_DEADLINE: Duration = Duration::from_secs(10 * 60);

/// A refusal: HTTP status and Vault's `errors` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub errors: Vec<String>,
}

impl ApiError {
    pub fn new(status: u16, msg: impl Into<String>) -> ApiError {
        ApiError {
            status,
            errors: vec![msg.into()],
        }
    }
    /// Vault's bare errors, e.g. 405 `{"errors":[]}`.
    pub fn empty(status: u16) -> ApiError {
        ApiError {
            status,
            errors: vec![],
        }
    }
    pub fn sealed() -> ApiError {
        ApiError::new(503, "Vault is sealed")
    }
    pub fn permission_denied() -> ApiError {
        ApiError::new(403, "permission denied")
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Parameters of `PUT /sys/init` (Go's zero values for missing fields).
#[derive(Debug, Default)]
pub struct InitRequest {
    pub secret_shares: i64,
    pub secret_threshold: i64,
    pub stored_shares: i64,
    pub pgp_keys: Vec<String>,
    pub root_token_pgp_key: String,
    pub recovery_shares: i64,
    pub recovery_threshold: i64,
    pub recovery_pgp_keys: Vec<String>,
}

/// Parameters of `PUT /sys/rekey/init`.
#[derive(Debug, Default)]
pub struct RekeyRequest {
    pub secret_shares: i64,
    pub secret_threshold: i64,
    pub stored_shares: i64,
    pub pgp_keys: Vec<String>,
    pub backup: bool,
    pub require_verification: bool,
}

struct Unlock {
    parts: Vec<Vec<u8>>,
    nonce: String,
}

struct Unsealed {
    root_key: Vec<u8>,
    keyring: Keyring,
}

/// In-memory rekey state (Vault's `barrierRekeyConfig`): gone on seal or restart.
struct Rekey {
    nonce: String,
    created: Instant,
    shares: usize,
    threshold: usize,
    verification_required: bool,
    progress: Vec<Vec<u8>>,
    verification_key: Option<Vec<u8>>,
    verification_nonce: String,
    verification_progress: Vec<Vec<u8>>,
}

pub struct Core {
    data_dir: std::path::PathBuf,
    stored: Option<Stored>,
    unsealed: Option<Unsealed>,
    unlock: Option<Unlock>,
    rekey: Option<Rekey>,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn root_token() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let body: String = (0..24)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("hvs.{body}")
}

/// Vault's `SealConfig.Validate`.
fn validate(shares: i64, threshold: i64, stored: i64, pgp: usize) -> Result<(), String> {
    if shares < 1 {
        return Err("shares must be at least one".into());
    }
    if threshold < 1 {
        return Err("threshold must be at least one".into());
    }
    if shares > 1 && threshold == 1 {
        return Err("threshold must be greater than one for multiple shares".into());
    }
    if shares > 255 {
        return Err("shares must be less than 256".into());
    }
    if threshold > 255 {
        return Err("threshold must be less than 256".into());
    }
    if threshold > shares {
        return Err("threshold cannot be larger than shares".into());
    }
    if stored > 1 {
        return Err("stored keys cannot be larger than 1".into());
    }
    if pgp > 0 && pgp as i64 != shares {
        return Err(
            "count mismatch between number of provided PGP keys and number of shares".into(),
        );
    }
    Ok(())
}

const PGP_UNSUPPORTED: &str = "lab-vault: pgp_keys (PGP-encrypted key shares) are not supported \
     by this stand-in; request the shares unencrypted";

/// Splits a fresh key into the shares a client receives (a single share is the key itself).
fn deal(key: &[u8], shares: usize, threshold: usize) -> ApiResult<Vec<Vec<u8>>> {
    if shares == 1 {
        return Ok(vec![key.to_vec()]);
    }
    shamir::split(key, shares, threshold)
        .map_err(|e| ApiError::new(500, format!("failed to generate shares: {e}")))
}

impl Core {
    /// Opens the data dir: initialised and sealed if it holds a state file, else uninitialised.
    pub fn open(data_dir: std::path::PathBuf) -> anyhow::Result<Core> {
        let stored = state::load(&data_dir)?;
        Ok(Core {
            data_dir,
            stored,
            unsealed: None,
            unlock: None,
            rekey: None,
        })
    }

    pub fn initialized(&self) -> bool {
        self.stored.is_some()
    }

    pub fn sealed(&self) -> bool {
        self.unsealed.is_none()
    }

    fn persist(&self, stored: &Stored) -> ApiResult<()> {
        state::save(&self.data_dir, stored)
            .map_err(|e| ApiError::new(500, format!("failed to persist barrier: {e:#}")))
    }

    pub fn cluster(&self) -> Option<(String, String)> {
        match (&self.stored, &self.unsealed) {
            (Some(s), Some(_)) => Some((s.cluster_name.clone(), s.cluster_id.clone())),
            _ => None,
        }
    }

    /// `GET /sys/seal-status` body.
    pub fn seal_status(&self) -> Value {
        let (t, n) = self
            .stored
            .as_ref()
            .map(|s| (s.seal_config.secret_threshold, s.seal_config.secret_shares))
            .unwrap_or((0, 0));
        let (progress, nonce) = match &self.unlock {
            Some(u) => (u.parts.len(), u.nonce.clone()),
            None => (0, String::new()),
        };
        let mut v = json!({
            "type": "shamir",
            "initialized": self.initialized(),
            "sealed": self.sealed(),
            "t": t,
            "n": n,
            "progress": progress,
            "nonce": nonce,
            "version": VERSION,
            "build_date": BUILD_DATE,
            "migration": false,
            "recovery_seal": false,
            "storage_type": "file",
            "removed_from_cluster": false,
        });
        if let Some((name, id)) = self.cluster() {
            v["cluster_name"] = json!(name);
            v["cluster_id"] = json!(id);
        }
        v
    }

    /// Whether `token` is a valid (root) token. Always false while sealed.
    pub fn token_valid(&self, token: &str) -> bool {
        match &self.unsealed {
            Some(u) if !token.is_empty() => u.keyring.token_sha256.contains(&sha256_hex(token)),
            _ => false,
        }
    }

    /// `PUT /sys/init`.
    pub fn init(&mut self, req: &InitRequest) -> ApiResult<Value> {
        // http/sys_init.go validateInitParameters (Shamir seal: no recovery parameters).
        if req.recovery_shares != 0
            || req.recovery_threshold != 0
            || !req.recovery_pgp_keys.is_empty()
        {
            return Err(ApiError::new(
                400,
                "parameters specific to auto unseal seals present",
            ));
        }
        // vault/init.go: the configuration is validated before the initialised check.
        validate(
            req.secret_shares,
            req.secret_threshold,
            req.stored_shares.min(1),
            req.pgp_keys.len(),
        )
        .map_err(|e| ApiError::new(400, format!("invalid seal configuration: {e}")))?;
        if !req.pgp_keys.is_empty() || !req.root_token_pgp_key.is_empty() {
            return Err(ApiError::new(400, PGP_UNSUPPORTED));
        }
        if self.initialized() {
            return Err(ApiError::new(400, "Vault is already initialized"));
        }
        let shares = req.secret_shares as usize;
        let threshold = req.secret_threshold as usize;
        let unseal_key = state::random_bytes(32);
        let root_key = state::random_bytes(32);
        let parts = deal(&unseal_key, shares, threshold)?;
        let token = root_token();
        let keyring = Keyring {
            token_sha256: vec![sha256_hex(&token)],
        };
        let cluster_id = state::uuid();
        let cluster_name = format!("vault-cluster-{}", &cluster_id[..8]);
        let stored = Stored::new(
            SealConfig {
                kind: "shamir".into(),
                secret_shares: shares,
                secret_threshold: threshold,
                stored_shares: 1,
            },
            &unseal_key,
            &root_key,
            &keyring,
            cluster_name,
            cluster_id,
        );
        self.persist(&stored)?;
        self.stored = Some(stored);
        self.unlock = None;
        Ok(json!({
            "keys": parts.iter().map(hex::encode).collect::<Vec<_>>(),
            "keys_base64": parts.iter().map(b64).collect::<Vec<_>>(),
            "root_token": token,
        }))
    }

    /// `PUT /sys/unseal` with `reset`.
    pub fn unseal_reset(&mut self) -> ApiResult<Value> {
        if !self.sealed() {
            return Err(ApiError::new(400, "vault is unsealed"));
        }
        self.unlock = None;
        Ok(self.seal_status())
    }

    /// `PUT /sys/unseal` with a decoded key share (`vault/core.go` `unsealFragment`).
    pub fn unseal(&mut self, key: &[u8]) -> ApiResult<Value> {
        let Some(stored) = self.stored.clone() else {
            return Err(ApiError::new(400, "Vault is not initialized"));
        };
        check_key_length(key, "invalid key: ")?;
        if !self.sealed() {
            return Ok(self.seal_status());
        }
        // recordUnsealPart: a share already given is silently ignored.
        let unlock = self.unlock.get_or_insert_with(|| Unlock {
            parts: vec![],
            nonce: state::uuid(),
        });
        if unlock.parts.iter().any(|p| p.as_slice() == key) {
            return Ok(self.seal_status());
        }
        unlock.parts.push(key.to_vec());
        if unlock.parts.len() < stored.seal_config.secret_threshold {
            return Ok(self.seal_status());
        }
        // getUnsealKey: the attempt is over whatever happens next.
        let parts = self.unlock.take().map(|u| u.parts).unwrap_or_default();
        if refuse_unseal_switch() {
            // Lab fault switch: answer as Vault answers a wrong key.
            return Err(ApiError::new(
                400,
                format!("unable to retrieve stored keys: {}", state::AUTH_FAILED),
            ));
        }
        let unseal_key = if stored.seal_config.secret_threshold == 1 {
            parts[0].clone()
        } else {
            shamir::combine(&parts).map_err(|e| {
                ApiError::new(
                    400,
                    format!("invalid key: failed to compute combined key: {e}"),
                )
            })?
        };
        let root_key = stored
            .root_key(&unseal_key)
            .map_err(|e| ApiError::new(400, format!("unable to retrieve stored keys: {e}")))?;
        let keyring = stored
            .keyring(&root_key)
            .map_err(|e| ApiError::new(500, e))?;
        self.unsealed = Some(Unsealed { root_key, keyring });
        Ok(self.seal_status())
    }

    /// `PUT /sys/seal` (`SealWithRequest`): a no-op when sealed, else needs a valid token.
    pub fn seal(&mut self, token: &str) -> ApiResult<()> {
        if self.sealed() {
            return Ok(());
        }
        if !self.token_valid(token) {
            return Err(ApiError::permission_denied());
        }
        self.seal_now();
        Ok(())
    }

    /// Seals without a token (lab fault injection); drops every in-memory operation.
    pub fn seal_now(&mut self) {
        self.unsealed = None;
        self.unlock = None;
        self.rekey = None;
    }

    fn require_unsealed(&self) -> ApiResult<&Stored> {
        if self.sealed() {
            return Err(ApiError::sealed());
        }
        self.stored
            .as_ref()
            .ok_or_else(|| ApiError::new(400, "Vault is not initialized"))
    }

    /// `GET /sys/rekey/init`.
    pub fn rekey_status(&self) -> ApiResult<Value> {
        if !self.initialized() {
            return Err(ApiError::new(400, "server is not yet initialized"));
        }
        let stored = self.require_unsealed()?;
        let mut v = json!({
            "nonce": "",
            "started": false,
            "t": 0,
            "n": 0,
            "progress": 0,
            "required": stored.seal_config.secret_threshold,
            "pgp_fingerprints": null,
            "backup": false,
            "verification_required": false,
        });
        if let Some(r) = &self.rekey {
            v["nonce"] = json!(r.nonce);
            v["started"] = json!(true);
            v["t"] = json!(r.threshold);
            v["n"] = json!(r.shares);
            v["progress"] = json!(r.progress.len());
            v["verification_required"] = json!(r.verification_required);
            if r.verification_key.is_some() {
                v["verification_nonce"] = json!(r.verification_nonce);
            }
        }
        Ok(v)
    }

    /// `PUT /sys/rekey/init` (checks in the order of http/sys_rekey.go + `BarrierRekeyInit`).
    pub fn rekey_init(&mut self, req: &RekeyRequest) -> ApiResult<Value> {
        if req.backup && req.pgp_keys.is_empty() {
            return Err(ApiError::new(
                400,
                "cannot request a backup of the new keys without providing PGP keys for encryption",
            ));
        }
        if !req.pgp_keys.is_empty() && req.pgp_keys.len() as i64 != req.secret_shares {
            return Err(ApiError::new(400, "incorrect number of PGP keys for rekey"));
        }
        if req.secret_threshold > req.secret_shares {
            return Err(ApiError::new(
                400,
                "provided threshold greater than the total shares",
            ));
        }
        // Shamir seals force stored_shares to 1 before validating.
        validate(
            req.secret_shares,
            req.secret_threshold,
            1,
            req.pgp_keys.len(),
        )
        .map_err(|e| ApiError::new(500, format!("invalid rekey seal configuration: {e}")))?;
        if !req.pgp_keys.is_empty() {
            return Err(ApiError::new(400, PGP_UNSUPPORTED));
        }
        self.require_unsealed()?;
        if self.rekey.is_some() {
            return Err(ApiError::new(400, "rekey already in progress"));
        }
        self.rekey = Some(Rekey {
            nonce: state::uuid(),
            created: Instant::now(),
            shares: req.secret_shares as usize,
            threshold: req.secret_threshold as usize,
            verification_required: req.require_verification,
            progress: vec![],
            verification_key: None,
            verification_nonce: String::new(),
            verification_progress: vec![],
        });
        self.rekey_status()
    }

    /// `DELETE /sys/rekey/init` (`RekeyCancel`, with the Vault 1.20 nonce rule).
    pub fn rekey_cancel(&mut self, nonce: &str) -> ApiResult<()> {
        self.require_unsealed()?;
        if let Some(r) = &self.rekey {
            if r.nonce != nonce && r.created.elapsed() < CANCEL_NONCE_DEADLINE {
                return Err(ApiError::new(400, "invalid request"));
            }
        }
        self.rekey = None;
        Ok(())
    }

    /// `PUT /sys/rekey/update` with an OLD share (`BarrierRekeyUpdate`).
    /// `Ok(None)` = below threshold (the caller answers with the rekey status).
    pub fn rekey_update(&mut self, key: &[u8], nonce: &str) -> ApiResult<Option<Value>> {
        let stored = self.require_unsealed()?.clone();
        check_key_length(key, "")?;
        let Some(rekey) = self.rekey.as_mut() else {
            return Err(ApiError::new(400, "no barrier rekey in progress"));
        };
        if rekey.verification_key.is_some() {
            return Err(ApiError::new(
                400,
                format!(
                    "rekey operation already finished; verification must be performed; nonce for the verification operation is {:?}",
                    rekey.verification_nonce
                ),
            ));
        }
        if nonce != rekey.nonce {
            return Err(ApiError::new(
                400,
                format!(
                    "incorrect nonce supplied; nonce for this rekey operation is {:?}",
                    rekey.nonce
                ),
            ));
        }
        if rekey.progress.iter().any(|p| p.as_slice() == key) {
            return Err(ApiError::new(
                400,
                "given key has already been provided during this generation operation",
            ));
        }
        rekey.progress.push(key.to_vec());
        if rekey.progress.len() < stored.seal_config.secret_threshold {
            return Ok(None);
        }
        let parts = std::mem::take(&mut rekey.progress);
        let recovered = if stored.seal_config.secret_threshold == 1 {
            parts[0].clone()
        } else {
            shamir::combine(&parts)
                .map_err(|e| ApiError::new(500, format!("failed to compute root key: {e}")))?
        };
        let root = stored
            .root_key(&recovered)
            .map_err(|e| ApiError::new(500, format!("failed to read root key: {e}")))?;
        let current = &self.unsealed.as_ref().expect("unsealed").root_key;
        if &root != current {
            return Err(ApiError::new(
                400,
                "root key verification failed: the recovered key does not open the barrier",
            ));
        }
        let new_key = state::random_bytes(32);
        let rekey = self.rekey.as_mut().expect("rekey in progress");
        let parts = deal(&new_key, rekey.shares, rekey.threshold)?;
        let mut resp = json!({
            "nonce": rekey.nonce,
            "complete": true,
            "keys": parts.iter().map(hex::encode).collect::<Vec<_>>(),
            "keys_base64": parts.iter().map(b64).collect::<Vec<_>>(),
            "pgp_fingerprints": null,
            "backup": false,
            "verification_required": rekey.verification_required,
        });
        if rekey.verification_required {
            rekey.verification_nonce = state::uuid();
            rekey.verification_key = Some(new_key);
            resp["verification_nonce"] = json!(rekey.verification_nonce);
            return Ok(Some(resp));
        }
        self.perform_rekey(&new_key)?;
        self.rekey = None;
        Ok(Some(resp))
    }

    /// `performBarrierRekey`: the new unseal key protects a new root key; the barrier
    /// contents are re-encrypted; the new seal configuration is stored; all atomically.
    fn perform_rekey(&mut self, new_unseal_key: &[u8]) -> ApiResult<()> {
        let stored = self.stored.as_ref().expect("initialised");
        let rekey = self.rekey.as_ref().expect("rekey in progress");
        let keyring = self.unsealed.as_ref().expect("unsealed").keyring.clone();
        let new_root = state::random_bytes(32);
        let next = Stored::new(
            SealConfig {
                kind: "shamir".into(),
                secret_shares: rekey.shares,
                secret_threshold: rekey.threshold,
                stored_shares: 1,
            },
            new_unseal_key,
            &new_root,
            &keyring,
            stored.cluster_name.clone(),
            stored.cluster_id.clone(),
        );
        self.persist(&next).map_err(|e| {
            ApiError::new(
                500,
                format!("failed to perform barrier rekey: {}", e.errors.join("; ")),
            )
        })?;
        self.stored = Some(next);
        self.unsealed = Some(Unsealed {
            root_key: new_root,
            keyring,
        });
        Ok(())
    }

    /// `GET /sys/rekey/verify`.
    pub fn verify_status(&self) -> ApiResult<Value> {
        if !self.initialized() {
            return Err(ApiError::new(400, "server is not yet initialized"));
        }
        self.require_unsealed()?;
        let Some(r) = &self.rekey else {
            return Err(ApiError::new(400, "no rekey configuration found"));
        };
        Ok(json!({
            "nonce": r.verification_nonce,
            "started": r.verification_key.is_some(),
            "t": r.threshold,
            "n": r.shares,
            "progress": r.verification_progress.len(),
        }))
    }

    /// `DELETE /sys/rekey/verify` (`RekeyVerifyRestart`): new nonce, progress 0.
    pub fn verify_restart(&mut self) -> ApiResult<Value> {
        self.require_unsealed()?;
        if let Some(r) = self.rekey.as_mut() {
            r.verification_progress.clear();
            r.verification_nonce = state::uuid();
        }
        self.verify_status()
    }

    /// `PUT /sys/rekey/verify` with a NEW share (`RekeyVerify`).
    /// `Ok(None)` = below threshold (the caller answers with the verify status).
    pub fn verify_update(&mut self, key: &[u8], nonce: &str) -> ApiResult<Option<Value>> {
        self.require_unsealed()?;
        check_key_length(key, "")?;
        let Some(rekey) = self.rekey.as_mut() else {
            return Err(ApiError::new(400, "no rekey in progress"));
        };
        let Some(expected) = rekey.verification_key.clone() else {
            return Err(ApiError::new(400, "no rekey verification in progress"));
        };
        if nonce != rekey.verification_nonce {
            return Err(ApiError::new(
                400,
                format!(
                    "incorrect nonce supplied; nonce for this verify operation is {:?}",
                    rekey.verification_nonce
                ),
            ));
        }
        if rekey
            .verification_progress
            .iter()
            .any(|p| p.as_slice() == key)
        {
            return Err(ApiError::new(
                400,
                "given key has already been provided during this verify operation",
            ));
        }
        rekey.verification_progress.push(key.to_vec());
        if rekey.verification_progress.len() < rekey.threshold {
            return Ok(None);
        }
        // The attempt is over: forget the shares; on failure also rotate the nonce.
        let parts = std::mem::take(&mut rekey.verification_progress);
        let recovered = if rekey.threshold == 1 {
            Ok(parts[0].clone())
        } else {
            shamir::combine(&parts).map_err(|e| {
                ApiError::new(500, format!("failed to compute key for verification: {e}"))
            })
        };
        let recovered = match recovered {
            Ok(k) if k == expected => k,
            Ok(_) => {
                rekey.verification_nonce = state::uuid();
                return Err(ApiError::new(
                    400,
                    "rekey verification failed; incorrect key shares supplied",
                ));
            }
            Err(e) => {
                rekey.verification_nonce = state::uuid();
                return Err(e);
            }
        };
        let verification_nonce = rekey.verification_nonce.clone();
        self.perform_rekey(&recovered)?;
        self.rekey = None;
        Ok(Some(
            json!({ "nonce": verification_nonce, "complete": true }),
        ))
    }
}

/// The length check of `unsealFragment` / `BarrierRekeyUpdate` / `RekeyVerify`.
/// Unseal wraps the message in `ErrInvalidKey` (`invalid key: ...`), rekey does not.
fn check_key_length(key: &[u8], prefix: &str) -> ApiResult<()> {
    if key.len() < KEY_MIN {
        return Err(ApiError::new(
            400,
            format!("{prefix}key is shorter than minimum {KEY_MIN} bytes"),
        ));
    }
    if key.len() > KEY_MAX {
        return Err(ApiError::new(
            400,
            format!("{prefix}key is longer than maximum {KEY_MAX} bytes"),
        ));
    }
    Ok(())
}

fn b64(bytes: &Vec<u8>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The lab's "Vault refuses keys" fault switch: `"vaultRefuseUnseal": true` in the JSON file
/// named by `LAB_FAULTS` (lab-k3s passes `<data dir>/lab-faults.json`; see `k3s::faults`).
/// Read on every attempt so a test can flip it while Vault runs. Not part of Vault's API.
fn refuse_unseal_switch() -> bool {
    let Some(path) = std::env::var_os("LAB_FAULTS") else {
        return false;
    };
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .is_some_and(|v| v["vaultRefuseUnseal"] == Value::Bool(true))
}
