//! `VaultError`: what went wrong talking to Vault, classified so the operator (and the flow
//! code) can act on it; [`VaultError::next`] gives the next step beside the message.
//!
//! Classification follows `platform-facts.md` §1: Vault's `{"errors":[...]}` bodies and status
//! codes. Where Vault uses one status for several causes (most refusals are 400), the cause
//! is told apart by the error text, which differs between Vault versions; the patterns below
//! cover the wording of the versions the facts card lists, and anything unrecognised falls
//! back to [`VaultError::Other`] with Vault's own words rather than a guess.
//!
//! Error texts never contain a key share or token: Vault does not echo them, and
//! [`scrub`] removes any submitted secret from the messages anyway before they are stored.

use std::fmt;

/// The operation a response belongs to; the same status means different things per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    SealStatus,
    Unseal,
    UnsealReset,
    Init,
    Health,
    RekeyStatus,
    RekeyInit,
    RekeyUpdate,
    RekeyCancel,
    VerifyStatus,
    Verify,
    VerifyRestart,
    GenerateRootInit,
    GenerateRootUpdate,
    GenerateRootCancel,
    /// A token-authenticated read or write (mounts, auth methods, policies, roles).
    Admin,
    Login,
    RevokeSelf,
}

/// Which key Vault refused: the current key (to unseal or to authorise a rekey) or the new
/// shares being verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    Unseal,
    RekeyOldKey,
    VerifyNewKey,
    /// The unseal key given to `sys/generate-root` for a short-lived root token.
    GenerateRoot,
}

/// A Vault failure an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot reach Vault at {url}: {reason}")]
    Unreachable { url: String, reason: String },

    #[error("Vault at {url} is sealed; this operation needs an unsealed Vault")]
    Sealed { url: String },

    #[error("Vault at {url} is not initialized: it holds no data that a key could open")]
    NotInitialized { url: String },

    #[error("Vault at {url} is already initialized; rebox never initializes a Vault twice")]
    AlreadyInitialized { url: String },

    #[error("{}", bad_key_message(*during, *status, errors))]
    BadKey {
        during: KeyUse,
        status: u16,
        errors: Vec<String>,
    },

    #[error("Vault refused the key share as malformed ({})", join(errors))]
    Malformed { errors: Vec<String> },

    #[error("Vault already counted this key share in the current operation")]
    DuplicateShare,

    #[error("a rekey is already in progress on Vault at {url}{}; rebox did not touch it", in_progress_detail(nonce.as_deref(), *verification_pending))]
    RekeyInProgress {
        url: String,
        nonce: Option<String>,
        verification_pending: bool,
    },

    #[error("the nonce does not belong to the operation in progress{}: it was restarted or started by someone else", expected.as_deref().map(|n| format!(" (Vault expects {n})")).unwrap_or_default())]
    NonceMismatch { expected: Option<String> },

    #[error("no rekey is in progress on Vault at {url} (a Vault restart or seal drops a pending rekey; the current key stays valid)")]
    NoRekeyInProgress { url: String },

    #[error("the rekey already produced new key shares and waits for their verification{}", nonce.as_deref().map(|n| format!(" (verification nonce {n})")).unwrap_or_default())]
    VerificationPending { nonce: Option<String> },

    #[error("gave {given} distinct key share(s) but Vault needs {threshold} to unseal; the partial attempt was reset")]
    NotEnoughShares { given: u32, threshold: u32 },

    #[error("Vault at {url} is unsealed but not active after {secs}s (health {code}: no raft leader yet)")]
    NotActive { url: String, secs: u64, code: u16 },

    #[error("the answer from {url} is not what Vault sends: {reason}")]
    Protocol { url: String, reason: String },

    #[error("cannot set up the Vault client: {reason}")]
    Config { reason: String },

    /// OpenBao (≥ 2.5, its default) answers `unsupported operation` on the unauthenticated
    /// `sys/rekey/*` and `sys/generate-root/*` endpoints unless its listener turns them on.
    #[error("Vault at {url} refuses the unauthenticated {endpoint} endpoints (\"unsupported operation\": OpenBao's default, `{switch}`)")]
    UnauthedEndpointsDisabled {
        url: String,
        endpoint: &'static str,
        switch: &'static str,
    },

    #[error("Vault answered {status}: {}", join(errors))]
    Other { status: u16, errors: Vec<String> },
}

fn join(errors: &[String]) -> String {
    if errors.is_empty() {
        "no details".into()
    } else {
        errors.join("; ")
    }
}

fn in_progress_detail(nonce: Option<&str>, verification_pending: bool) -> String {
    match (nonce, verification_pending) {
        (Some(n), true) => format!(" (nonce {n}, new shares awaiting verification)"),
        (Some(n), false) => format!(" (nonce {n})"),
        (None, _) => String::new(),
    }
}

fn bad_key_message(during: KeyUse, status: u16, errors: &[String]) -> String {
    let said = format!("Vault answered {status}: {}", join(errors));
    match during {
        KeyUse::Unseal => format!(
            "the key in the backup does not open this Vault ({said}); Vault discarded the shares given in this attempt"
        ),
        KeyUse::RekeyOldKey => format!(
            "Vault refused the current unseal key for the rekey ({said}); the shares given were discarded and nothing was rotated"
        ),
        KeyUse::VerifyNewKey => format!(
            "the new key shares did not verify ({said}); nothing was rotated and the old key is still the only one that opens Vault"
        ),
        KeyUse::GenerateRoot => format!(
            "Vault refused the unseal key for a root token ({said}); no token was made"
        ),
    }
}

impl VaultError {
    /// The next step for this failure, as far as the client knows it (callers that know the
    /// homelab's names give a more precise one beside the error, see `crate::next`).
    pub fn next(&self) -> String {
        match self {
            VaultError::Unreachable { .. } => "check that the tunnel to Vault is up and that Vault's pod is Running; `rebox status` shows the recovery sequence".into(),
            VaultError::Sealed { .. } => "unseal it first with the key from the offline backup (`rebox unseal`)".into(),
            VaultError::UnauthedEndpointsDisabled { switch, .. } => format!("set `{switch} = false` in the `listener \"tcp\"` stanza of OpenBao's config and restart it (the key shares are then the authorisation, as in HashiCorp Vault); rebox's authenticated path for OpenBao is not there yet"),
            VaultError::NotInitialized { .. } => "on a restore, check that Vault's volume was restored from the NAS before Vault started (`rebox status`); never initialize a Vault that should have data".into(),
            VaultError::AlreadyInitialized { .. } => "unseal it with the key from its offline backup (`rebox unseal`)".into(),
            VaultError::BadKey { during: KeyUse::VerifyNewKey, .. } => "give the new shares exactly as the rekey returned them; the verification nonce changed, read it again".into(),
            VaultError::BadKey { during: KeyUse::RekeyOldKey, .. } => "check that the backup belongs to this cluster (`rebox key verify FILE`), then give the shares again".into(),
            VaultError::BadKey { during: KeyUse::Unseal | KeyUse::GenerateRoot, .. } => "check that the backup belongs to this cluster (`rebox key verify FILE`)".into(),
            VaultError::Malformed { .. } => "a share is the hex or base64 text exactly as Vault printed it; check the backup with `rebox key show FILE`".into(),
            VaultError::DuplicateShare => "give a different share of the same key; each share counts once".into(),
            VaultError::RekeyInProgress { .. } => "if it is an interrupted `rebox rotate-unseal-key`, rerun that command to resume it; otherwise find who started it before cancelling it with its nonce".into(),
            VaultError::NonceMismatch { .. } => "read the current state (`rekey status`) and start over if the operation is not yours".into(),
            VaultError::NoRekeyInProgress { .. } => "start the rotation again (`rebox rotate-unseal-key`)".into(),
            VaultError::VerificationPending { .. } => "verify with the NEW shares; until then only the old key opens Vault".into(),
            VaultError::NotEnoughShares { threshold, .. } => format!("supply at least {threshold} different shares from the offline backup"),
            VaultError::NotActive { .. } => "read the Vault pod's log (raft leader election); rerun once `rebox status` shows Vault active".into(),
            VaultError::Protocol { .. } => "check that the address points at Vault's API (the Vault Service and its port in rebox.toml)".into(),
            VaultError::Config { .. } => "check the Vault address and CA certificate given to rebox".into(),
            VaultError::Other { .. } => "read Vault's message above; `rebox doctor` checks Vault's state".into(),
        }
    }

    /// True when Vault refused a key because it does not open this Vault (not because it
    /// was malformed).
    pub fn is_bad_key(&self) -> bool {
        matches!(self, VaultError::BadKey { .. })
    }
}

/// Replaces every occurrence of each secret in `errors` with `[redacted]`.
pub(crate) fn scrub(errors: &mut [String], secrets: &[&str]) {
    for e in errors.iter_mut() {
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            if e.contains(s) {
                *e = e.replace(s, "[redacted]");
            }
        }
    }
}

/// The quoted value after `marker` in Vault's text, e.g. the nonce in
/// `incorrect nonce supplied; nonce for this rekey operation is "abc"`.
fn quoted_after(errors: &[String], marker: &str) -> Option<String> {
    errors.iter().find_map(|e| {
        let rest = &e[e.find(marker)? + marker.len()..];
        let rest = rest.trim_start().strip_prefix('"')?;
        Some(rest[..rest.find('"')?].to_string())
    })
}

fn any(errors: &[String], needles: &[&str]) -> bool {
    errors.iter().any(|e| {
        let e = e.to_ascii_lowercase();
        needles.iter().any(|n| e.contains(n))
    })
}

/// Turns a refusal into a [`VaultError`]. `errors` must already be [`scrub`]bed.
pub(crate) fn classify(op: Op, url: &str, status: u16, errors: Vec<String>) -> VaultError {
    let url = url.to_string();
    if any(&errors, &["unsupported operation"]) {
        let disabled = match op {
            Op::GenerateRootInit | Op::GenerateRootUpdate | Op::GenerateRootCancel => Some((
                "sys/generate-root",
                "disable_unauthed_generate_root_endpoints",
            )),
            Op::RekeyInit
            | Op::RekeyUpdate
            | Op::RekeyCancel
            | Op::RekeyStatus
            | Op::VerifyStatus
            | Op::Verify
            | Op::VerifyRestart => Some(("sys/rekey", "disable_unauthed_rekey_endpoints")),
            _ => None,
        };
        if let Some((endpoint, switch)) = disabled {
            return VaultError::UnauthedEndpointsDisabled {
                url,
                endpoint,
                switch,
            };
        }
    }
    if status == 503 && (errors.is_empty() || any(&errors, &["sealed"])) {
        return VaultError::Sealed { url };
    }
    if status == 501 || any(&errors, &["not initialized", "not yet initialized"]) {
        return VaultError::NotInitialized { url };
    }
    if any(&errors, &["already initialized"]) {
        return VaultError::AlreadyInitialized { url };
    }
    // Malformed before bad key: "invalid key: key is shorter than minimum" is a length check.
    if any(
        &errors,
        &[
            "must be a valid hex or base64",
            "must be specified in request body",
            "key is shorter than minimum",
            "key is longer than maximum",
            "failed to parse json input",
        ],
    ) {
        return VaultError::Malformed { errors };
    }
    if any(&errors, &["incorrect nonce"]) {
        let expected = quoted_after(&errors, "operation is");
        return VaultError::NonceMismatch { expected };
    }
    // Vault ≥ 1.20 answers a cancel with a wrong nonce with a bare 400 "invalid request".
    if op == Op::RekeyCancel && status == 400 && any(&errors, &["invalid request", "nonce"]) {
        return VaultError::NonceMismatch { expected: None };
    }
    if any(&errors, &["already been provided"]) {
        return VaultError::DuplicateShare;
    }
    if any(&errors, &["rekey already in progress"]) {
        return VaultError::RekeyInProgress {
            url,
            nonce: None,
            verification_pending: false,
        };
    }
    if any(&errors, &["verification must be performed"]) {
        let nonce = quoted_after(&errors, "verification operation is");
        return VaultError::VerificationPending { nonce };
    }
    if any(
        &errors,
        &[
            "no barrier rekey in progress",
            "no rekey in progress",
            "no rekey configuration found",
            "no rekey verification in progress",
        ],
    ) {
        return VaultError::NoRekeyInProgress { url };
    }
    if let Some(during) = key_use(op) {
        let bad_key_text = any(
            &errors,
            &[
                "message authentication failed",
                "invalid key",
                "verification failed",
                "incorrect key shares",
                "failed to compute",
            ],
        );
        // §1: on unseal, any other 400 is the wrong-key answer of Vault ≥ 1.13.
        let unseal_400 = op == Op::Unseal && status == 400;
        if (status == 400 || status == 500) && (bad_key_text || unseal_400) {
            return VaultError::BadKey {
                during,
                status,
                errors,
            };
        }
    }
    VaultError::Other { status, errors }
}

fn key_use(op: Op) -> Option<KeyUse> {
    match op {
        Op::Unseal => Some(KeyUse::Unseal),
        Op::RekeyUpdate => Some(KeyUse::RekeyOldKey),
        Op::Verify => Some(KeyUse::VerifyNewKey),
        Op::GenerateRootUpdate => Some(KeyUse::GenerateRoot),
        _ => None,
    }
}

impl fmt::Display for KeyUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyUse::Unseal => "unseal",
            KeyUse::RekeyOldKey => "rekey (current key)",
            KeyUse::VerifyNewKey => "rekey verification (new key)",
            KeyUse::GenerateRoot => "root token generation",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(op: Op, status: u16, msg: &str) -> VaultError {
        classify(op, "http://v", status, vec![msg.to_string()])
    }

    #[test]
    fn vault_bad_key_old_and_new_vault_wording() {
        // Vault 1.3–1.12 and current Shamir seals: 500 with the AES-GCM failure.
        let e = c(
            Op::Unseal,
            500,
            "failed to decrypt keys from storage: cipher: message authentication failed",
        );
        assert!(matches!(
            e,
            VaultError::BadKey {
                during: KeyUse::Unseal,
                status: 500,
                ..
            }
        ));
        // Vault ≥ 1.13 (PR #17836): 400.
        let e = c(
            Op::Unseal,
            400,
            "unable to retrieve stored keys: invalid key: x",
        );
        assert!(e.is_bad_key());
        assert!(e.next().contains("rebox key verify FILE"), "{e}");
        let e = c(
            Op::RekeyUpdate,
            500,
            "failed to read root key: invalid key: failed to decrypt keys from storage: cipher: message authentication failed",
        );
        assert!(matches!(
            e,
            VaultError::BadKey {
                during: KeyUse::RekeyOldKey,
                ..
            }
        ));
        let e = c(
            Op::Verify,
            400,
            "rekey verification failed; incorrect key shares supplied",
        );
        assert!(matches!(
            e,
            VaultError::BadKey {
                during: KeyUse::VerifyNewKey,
                ..
            }
        ));
    }

    #[test]
    fn vault_a_500_without_key_wording_is_not_a_bad_key() {
        let e = c(Op::Unseal, 500, "failed to persist barrier: disk full");
        assert!(matches!(e, VaultError::Other { status: 500, .. }), "{e:?}");
        // A 400 on other operations is not a key verdict either.
        let e = c(
            Op::Init,
            400,
            "invalid seal configuration: threshold must be at least one",
        );
        assert!(matches!(e, VaultError::Other { status: 400, .. }), "{e:?}");
    }

    #[test]
    fn vault_malformed_before_bad_key() {
        for msg in [
            "'key' must be a valid hex or base64 string",
            "invalid key: key is shorter than minimum 16 bytes",
            "key is longer than maximum 33 bytes",
            "'key' must be specified in request body as JSON, or 'reset' set to true",
        ] {
            assert!(
                matches!(c(Op::Unseal, 400, msg), VaultError::Malformed { .. }),
                "{msg}"
            );
        }
    }

    #[test]
    fn vault_state_errors() {
        assert!(matches!(
            c(Op::RekeyStatus, 503, "Vault is sealed"),
            VaultError::Sealed { .. }
        ));
        assert!(matches!(
            c(Op::Unseal, 400, "Vault is not initialized"),
            VaultError::NotInitialized { .. }
        ));
        assert!(matches!(
            c(Op::RekeyStatus, 400, "server is not yet initialized"),
            VaultError::NotInitialized { .. }
        ));
        assert!(matches!(
            c(Op::Health, 501, ""),
            VaultError::NotInitialized { .. }
        ));
        assert!(matches!(
            c(Op::Init, 400, "Vault is already initialized"),
            VaultError::AlreadyInitialized { .. }
        ));
        assert!(matches!(
            c(Op::RekeyInit, 400, "rekey already in progress"),
            VaultError::RekeyInProgress { .. }
        ));
        assert!(matches!(
            c(Op::RekeyUpdate, 400, "no barrier rekey in progress"),
            VaultError::NoRekeyInProgress { .. }
        ));
        assert!(matches!(
            c(
                Op::RekeyUpdate,
                400,
                "given key has already been provided during this generation operation"
            ),
            VaultError::DuplicateShare
        ));
    }

    #[test]
    fn vault_nonces_are_read_from_vault_text() {
        let e = c(
            Op::RekeyUpdate,
            400,
            r#"incorrect nonce supplied; nonce for this rekey operation is "abc-123""#,
        );
        assert!(
            matches!(e, VaultError::NonceMismatch { expected: Some(ref n) } if n == "abc-123"),
            "{e:?}"
        );
        let e = c(
            Op::RekeyUpdate,
            400,
            r#"rekey operation already finished; verification must be performed; nonce for the verification operation is "v-9""#,
        );
        assert!(
            matches!(e, VaultError::VerificationPending { nonce: Some(ref n) } if n == "v-9"),
            "{e:?}"
        );
        assert!(matches!(
            c(Op::RekeyCancel, 400, "invalid request"),
            VaultError::NonceMismatch { expected: None }
        ));
    }

    #[test]
    fn vault_scrub_removes_secrets() {
        let mut errors = vec!["bad share deadbeef here".to_string()];
        scrub(&mut errors, &["deadbeef", ""]);
        assert_eq!(errors, ["bad share [redacted] here"]);
    }
}
