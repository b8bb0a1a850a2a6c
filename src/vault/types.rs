//! The JSON bodies Vault answers with, typed. Field names on the wire are exactly Vault's
//! (`platform-facts.md` §1); Rust names are spelled out where Vault abbreviates (`t`, `n`).
//!
//! Fields that some Vault versions omit default instead of failing, so a newer or older
//! Vault still parses. Every secret (key shares, root token) is a [`SecretText`]: zeroized on
//! drop, `[redacted]` in `Debug`.

use serde::Deserialize;

use crate::secret::SecretText;

/// `GET /v1/sys/seal-status`, also the answer of `sys/unseal`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SealStatus {
    #[serde(rename = "type", default)]
    pub seal_type: String,
    pub initialized: bool,
    pub sealed: bool,
    /// Shares needed to unseal.
    #[serde(rename = "t", default)]
    pub threshold: u32,
    /// Shares that exist.
    #[serde(rename = "n", default)]
    pub shares: u32,
    /// Distinct shares accepted in the current unseal attempt.
    #[serde(default)]
    pub progress: u32,
    /// Id of the current unseal attempt; empty when none.
    #[serde(default)]
    pub nonce: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub cluster_name: Option<String>,
    #[serde(default)]
    pub cluster_id: Option<String>,
}

/// What `unseal_all` reports after each share: how far the attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsealProgress {
    pub progress: u32,
    pub threshold: u32,
    pub sealed: bool,
}

impl From<&SealStatus> for UnsealProgress {
    fn from(s: &SealStatus) -> Self {
        UnsealProgress {
            progress: s.progress,
            threshold: s.threshold,
            sealed: s.sealed,
        }
    }
}

/// `PUT /v1/sys/init` answer: the only moment Vault hands out the key and root token.
#[derive(Debug, Deserialize)]
pub struct InitResult {
    /// Key shares, hex.
    pub keys: Vec<SecretText>,
    /// The same shares, base64.
    pub keys_base64: Vec<SecretText>,
    pub root_token: SecretText,
}

/// `GET /v1/sys/health` body plus the status code Vault chose (200 active, 429 standby,
/// 501 not initialized, 503 sealed, …).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Health {
    #[serde(skip)]
    pub code: u16,
    pub initialized: bool,
    pub sealed: bool,
    #[serde(default)]
    pub standby: bool,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub cluster_name: Option<String>,
}

/// `GET|PUT /v1/sys/rekey/init` and the below-threshold answer of `sys/rekey/update`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RekeyStatus {
    pub started: bool,
    #[serde(default)]
    pub nonce: String,
    /// Threshold of the NEW key (0 when not started).
    #[serde(rename = "t", default)]
    pub threshold: u32,
    /// Shares of the NEW key (0 when not started).
    #[serde(rename = "n", default)]
    pub shares: u32,
    /// Old shares given so far.
    #[serde(default)]
    pub progress: u32,
    /// Old shares needed (the CURRENT threshold).
    #[serde(default)]
    pub required: u32,
    #[serde(default)]
    pub verification_required: bool,
    /// Present once the new shares exist and wait for verification.
    #[serde(default)]
    pub verification_nonce: Option<String>,
}

/// The threshold answer of `sys/rekey/update`: the NEW shares. With verification requested
/// they do not open Vault yet; the old key stays valid until `rekey_verify` completes.
#[derive(Debug, Deserialize)]
pub struct RekeyKeys {
    pub nonce: String,
    pub keys: Vec<SecretText>,
    #[serde(default)]
    pub keys_base64: Vec<SecretText>,
    #[serde(default)]
    pub verification_required: bool,
    #[serde(default)]
    pub verification_nonce: Option<String>,
}

/// Answer of `rekey_update`.
#[derive(Debug)]
pub enum RekeyUpdate {
    /// Below the threshold of old shares.
    Progress(RekeyStatus),
    /// Threshold reached: the new shares.
    Complete(RekeyKeys),
}

/// `GET /v1/sys/rekey/verify` and the below-threshold answer of a verify update.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct VerifyStatus {
    pub started: bool,
    /// The verification nonce.
    #[serde(default)]
    pub nonce: String,
    #[serde(rename = "t", default)]
    pub threshold: u32,
    #[serde(rename = "n", default)]
    pub shares: u32,
    #[serde(default)]
    pub progress: u32,
}

/// Answer of `rekey_verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyUpdate {
    /// Below the threshold of new shares.
    Progress(VerifyStatus),
    /// Verified: the rotation happened, only the new shares open Vault from now on.
    Complete { nonce: String },
}

/// Raw threshold answer of `sys/rekey/verify`.
#[derive(Deserialize)]
pub(crate) struct VerifyComplete {
    pub nonce: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_init_result_debug_redacts_secrets() {
        let r: InitResult = serde_json::from_str(
            r#"{"keys":["aabbcc"],"keys_base64":["qrvM"],"root_token":"hvs.SECRET"}"#,
        )
        .unwrap();
        let shown = format!("{r:?}");
        assert!(!shown.contains("aabbcc") && !shown.contains("qrvM") && !shown.contains("hvs."));
        assert_eq!(r.keys[0].expose(), "aabbcc");
        assert_eq!(r.root_token.expose(), "hvs.SECRET");
    }

    #[test]
    fn vault_seal_status_uses_vault_field_names() {
        let s: SealStatus = serde_json::from_str(
            r#"{"type":"shamir","initialized":true,"sealed":true,"t":3,"n":5,"progress":1,"nonce":"x","version":"1.21.0"}"#,
        )
        .unwrap();
        assert_eq!((s.threshold, s.shares, s.progress), (3, 5, 1));
        assert_eq!(s.seal_type, "shamir");
    }
}
