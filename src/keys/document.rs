//! The backup document: what an age backup file holds once decrypted.
//!
//! Plain, commented TOML on purpose: an operator holding only the stock `age` tool and the
//! file can read the key with `age -d` and a pager. The format is versioned; a reader refuses a
//! version it does not know instead of guessing. Every secret carries its SHA-256 so damage
//! or a typo made while copying a paper backup by hand is detected before Vault sees the key.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use crate::secret::SecretText;

/// The `format` field: tells a rebox backup apart from any other TOML someone encrypted.
pub const FORMAT_NAME: &str = "rebox-unseal-key-backup";
/// The only document version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The comment block written above the document; readers ignore it.
const HEADER: &str = "\
# rebox offline backup of the Vault unseal key. KEEP THIS TEXT SECRET.
#
# Anyone holding `threshold` of the shares below can unseal Vault. To do it by hand:
#   kubectl -n security port-forward svc/vault 8200:8200 &
#   VAULT_ADDR=http://127.0.0.1:8200 vault operator unseal
# with no key argument, and paste one share's `key` when it asks (never put a share on a
# command line); repeat for `threshold` different shares.
# `rebox key show --reveal BACKUP.age` prints the shares, one per line.
#
# `sha256` is the hex SHA-256 of the `key` (or `value`) text exactly as written here; it
# detects a share that was damaged or mistyped when copied from paper.
";

/// The decrypted backup document (format version 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupDocument {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Always [`FORMAT_VERSION`] for documents this build accepts.
    pub version: u32,
    /// The cluster this key unseals (rebox.toml's `cluster_name`).
    pub cluster: String,
    /// RFC 3339 UTC time the backup was made.
    pub created_at: String,
    /// `rebox X.Y.Z` that made it.
    pub created_by: String,
    pub unseal: Unseal,
    /// Named bootstrap secrets (e.g. the Cloudflare API token), same rules as the key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<ExtraSecret>,
}

/// Vault's Shamir parameters and the shares this backup holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unseal {
    /// Shares needed to unseal.
    pub threshold: u32,
    /// Shares Vault produced in total (this backup may hold fewer).
    pub share_count: u32,
    pub shares: Vec<Share>,
}

/// One unseal key share, as Vault prints it (base64 or hex text).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    /// 1-based position in this backup.
    pub index: u32,
    #[serde(serialize_with = "SecretText::serialize_exposed")]
    pub key: SecretText,
    pub sha256: String,
}

/// A named extra secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraSecret {
    pub name: String,
    #[serde(serialize_with = "SecretText::serialize_exposed")]
    pub value: SecretText,
    pub sha256: String,
}

/// Metadata and fingerprints only: what `verify` prints and `--json` emits. Holds no secret.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub format_version: u32,
    pub cluster: String,
    pub created_at: String,
    pub created_by: String,
    pub threshold: u32,
    pub share_count: u32,
    pub shares: Vec<Fingerprint>,
    pub extra: Vec<Fingerprint>,
}

/// A share index or extra name with its SHA-256.
#[derive(Debug, Clone, Serialize)]
pub struct Fingerprint {
    pub name: String,
    pub sha256: String,
}

/// Why a plaintext is not an acceptable backup document. Messages never contain secret text.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("it decrypts, but does not hold a rebox unseal-key backup ({0})")]
    NotABackup(String),
    #[error(
        "it holds a rebox backup in format version {found}, but this rebox reads only version \
         {FORMAT_VERSION}; use a newer rebox, or read it with `age -d` (the document is plain text)"
    )]
    UnsupportedVersion { found: i64 },
    #[error("the backup document is damaged: {0}")]
    Invalid(String),
}

/// Just enough of the document to tell what it is before trusting its shape.
#[derive(Deserialize)]
struct Probe {
    format: Option<toml::Value>,
    version: Option<toml::Value>,
}

impl BackupDocument {
    /// Builds a version-1 document, computing every fingerprint.
    pub fn new(
        cluster: &str,
        threshold: u32,
        share_count: u32,
        shares: Vec<SecretText>,
        extra: Vec<(String, SecretText)>,
    ) -> Result<Self> {
        let created_at = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
            .format(&Rfc3339)?;
        let doc = BackupDocument {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            cluster: cluster.into(),
            created_at,
            created_by: format!("rebox {}", env!("CARGO_PKG_VERSION")),
            unseal: Unseal {
                threshold,
                share_count,
                shares: shares
                    .into_iter()
                    .enumerate()
                    .map(|(i, key)| Share {
                        index: i as u32 + 1,
                        sha256: key.sha256_hex(),
                        key,
                    })
                    .collect(),
            },
            extra: extra
                .into_iter()
                .map(|(name, value)| ExtraSecret {
                    name,
                    sha256: value.sha256_hex(),
                    value,
                })
                .collect(),
        };
        doc.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(doc)
    }

    /// The unseal key: the shares as the backup holds them, in order.
    pub fn shares(&self) -> Vec<SecretText> {
        self.unseal.shares.iter().map(|s| s.key.clone()).collect()
    }

    /// The commented TOML text. Zeroizing, since it contains every secret.
    pub fn to_text(&self) -> Result<Zeroizing<String>> {
        let body = Zeroizing::new(toml::to_string(self)?);
        let mut out = Zeroizing::new(String::with_capacity(HEADER.len() + body.len() + 1));
        out.push_str(HEADER);
        out.push('\n');
        out.push_str(&body);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        Ok(out)
    }

    /// Parses and fully checks a decrypted document: format name, version, shape, every
    /// fingerprint. Error messages name lines and fields, never values.
    pub fn parse(plaintext: &[u8]) -> Result<Self, DocumentError> {
        let text = std::str::from_utf8(plaintext)
            .map_err(|_| DocumentError::NotABackup("binary data, not text".into()))?;
        let probe: Probe = toml::from_str(text)
            .map_err(|_| DocumentError::NotABackup("not a TOML document".into()))?;
        match probe.format.as_ref().and_then(|v| v.as_str()) {
            Some(FORMAT_NAME) => {}
            Some(_) => {
                return Err(DocumentError::NotABackup(format!(
                    "its `format` is not \"{FORMAT_NAME}\""
                )))
            }
            None => {
                return Err(DocumentError::NotABackup(
                    "no `format = \"rebox-unseal-key-backup\"` line".into(),
                ))
            }
        }
        match probe.version.as_ref().and_then(|v| v.as_integer()) {
            Some(v) if v == FORMAT_VERSION as i64 => {}
            Some(v) => return Err(DocumentError::UnsupportedVersion { found: v }),
            None => {
                return Err(DocumentError::Invalid(
                    "the `version` field is missing or not a number".into(),
                ))
            }
        }
        let doc: BackupDocument =
            toml::from_str(text).map_err(|e| DocumentError::Invalid(describe(text, &e)))?;
        doc.validate()?;
        Ok(doc)
    }

    /// Structural rules and fingerprint checks shared by writing and reading.
    pub fn validate(&self) -> Result<(), DocumentError> {
        let bad = |m: String| Err(DocumentError::Invalid(m));
        if self.cluster.trim().is_empty() {
            return bad("`cluster` is empty".into());
        }
        if time::OffsetDateTime::parse(&self.created_at, &Rfc3339).is_err() {
            return bad("`created_at` is not an RFC 3339 time".into());
        }
        let u = &self.unseal;
        if u.shares.is_empty() {
            return bad("it holds no unseal key share".into());
        }
        if u.threshold == 0 || u.threshold > u.share_count {
            return bad(format!(
                "threshold {} is impossible with {} shares",
                u.threshold, u.share_count
            ));
        }
        if u.shares.len() as u64 > u.share_count as u64 {
            return bad(format!(
                "it holds {} shares but says Vault made only {}",
                u.shares.len(),
                u.share_count
            ));
        }
        for (i, share) in u.shares.iter().enumerate() {
            if share.index != i as u32 + 1 {
                return bad(format!("share {} has index {}", i + 1, share.index));
            }
            check_secret(&share.key, &share.sha256, &format!("share {}", share.index))?;
            if u.shares[..i].iter().any(|s| s.key == share.key) {
                return bad(format!("share {} repeats an earlier share", share.index));
            }
        }
        for (i, extra) in self.extra.iter().enumerate() {
            if !valid_name(&extra.name) {
                return bad(format!(
                    "extra secret {} has an invalid name (use letters, digits, - and _)",
                    i + 1
                ));
            }
            if self.extra[..i].iter().any(|e| e.name == extra.name) {
                return bad(format!("extra secret `{}` appears twice", extra.name));
            }
            check_secret(
                &extra.value,
                &extra.sha256,
                &format!("extra secret `{}`", extra.name),
            )?;
        }
        Ok(())
    }

    /// What `rebox key show` prints: every share, or the one extra secret named `extra`.
    pub fn secrets(&self, extra: Option<&str>) -> Result<Vec<&SecretText>, String> {
        let Some(name) = extra else {
            return Ok(self.unseal.shares.iter().map(|s| &s.key).collect());
        };
        match self.extra.iter().find(|e| e.name == name) {
            Some(e) => Ok(vec![&e.value]),
            None => {
                let names: Vec<&str> = self.extra.iter().map(|e| e.name.as_str()).collect();
                let held = match names.is_empty() {
                    true => "none".to_string(),
                    false => names.join(", "),
                };
                Err(format!(
                    "holds no extra secret named `{name}` (it holds: {held})"
                ))
            }
        }
    }

    /// Metadata and fingerprints, safe to print.
    pub fn summary(&self) -> Summary {
        Summary {
            format_version: self.version,
            cluster: self.cluster.clone(),
            created_at: self.created_at.clone(),
            created_by: self.created_by.clone(),
            threshold: self.unseal.threshold,
            share_count: self.unseal.share_count,
            shares: self
                .unseal
                .shares
                .iter()
                .map(|s| Fingerprint {
                    name: format!("share {}", s.index),
                    sha256: s.sha256.clone(),
                })
                .collect(),
            extra: self
                .extra
                .iter()
                .map(|e| Fingerprint {
                    name: e.name.clone(),
                    sha256: e.sha256.clone(),
                })
                .collect(),
        }
    }
}

/// Names of extra secrets: short, and safe to print and to use as Secret keys.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn check_secret(secret: &SecretText, recorded: &str, what: &str) -> Result<(), DocumentError> {
    if secret.expose().is_empty() {
        return Err(DocumentError::Invalid(format!("{what} is empty")));
    }
    if !secret.expose().is_ascii() || secret.expose().chars().any(|c| c.is_ascii_whitespace()) {
        return Err(DocumentError::Invalid(format!(
            "{what} contains whitespace or non-ASCII characters"
        )));
    }
    if !recorded.eq_ignore_ascii_case(&secret.sha256_hex()) {
        return Err(DocumentError::Invalid(format!(
            "{what} does not match its recorded SHA-256 fingerprint (damaged or mistyped); \
             use another copy of the backup"
        )));
    }
    Ok(())
}

/// A TOML error as "line N: what", without the snippet of the offending line (it may hold
/// a secret) and without serde's "invalid type: string \"…\"" values.
fn describe(text: &str, e: &toml::de::Error) -> String {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let msg = e.message();
    let safe = if msg.starts_with("missing field")
        || msg.starts_with("unknown field")
        || msg.starts_with("duplicate")
    {
        msg.lines().next().unwrap_or("").to_string()
    } else {
        "a value has the wrong type or form".to_string()
    };
    match line {
        Some(l) => format!("line {l}: {safe}"),
        None => safe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(keys: &[&str]) -> Vec<SecretText> {
        keys.iter()
            .map(|k| SecretText::new(k.to_string()))
            .collect()
    }

    fn sample() -> BackupDocument {
        BackupDocument::new(
            "homelab",
            2,
            3,
            shares(&["c2hhcmUtb25l", "c2hhcmUtdHdv"]),
            vec![(
                "cloudflare_api_token".into(),
                SecretText::new("cf-token-123".into()),
            )],
        )
        .unwrap()
    }

    #[test]
    fn key_document_round_trips_through_text() {
        let doc = sample();
        let text = doc.to_text().unwrap();
        assert!(text.starts_with("# rebox offline backup"));
        assert!(text.contains("format = \"rebox-unseal-key-backup\""));
        let back = BackupDocument::parse(text.as_bytes()).unwrap();
        assert_eq!(back.cluster, "homelab");
        assert_eq!(back.unseal.threshold, 2);
        assert_eq!(back.unseal.share_count, 3);
        assert_eq!(back.unseal.shares[1].key.expose(), "c2hhcmUtdHdv");
        assert_eq!(back.extra[0].value.expose(), "cf-token-123");
        assert_eq!(
            back.created_by,
            format!("rebox {}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn key_document_hand_written_is_accepted() {
        // What an operator could type from the documented format, fingerprints included.
        let text = format!(
            "format = \"rebox-unseal-key-backup\"\nversion = 1\ncluster = \"lab\"\n\
             created_at = \"2024-01-02T03:04:05Z\"\ncreated_by = \"hand\"\n\
             [unseal]\nthreshold = 1\nshare_count = 1\n\
             [[unseal.shares]]\nindex = 1\nkey = \"abc\"\nsha256 = \"{}\"\n",
            SecretText::new("abc".into()).sha256_hex()
        );
        BackupDocument::parse(text.as_bytes()).unwrap();
    }

    #[test]
    fn key_fingerprint_mismatch_is_detected() {
        let text = sample().to_text().unwrap();
        let damaged = text.replace("c2hhcmUtdHdv", "c2hhcmUtdHdw");
        let err = BackupDocument::parse(damaged.as_bytes()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("share 2 does not match its recorded SHA-256"),
            "{msg}"
        );
        assert!(!msg.contains("c2hhcmUtdHdw"), "secret leaked: {msg}");
    }

    #[test]
    fn key_extra_fingerprint_mismatch_is_detected() {
        let text = sample().to_text().unwrap();
        let damaged = text.replace("cf-token-123", "cf-token-124");
        let err = BackupDocument::parse(damaged.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("cloudflare_api_token"), "{err}");
    }

    #[test]
    fn key_unknown_version_is_refused() {
        let text = sample()
            .to_text()
            .unwrap()
            .replace("version = 1", "version = 2");
        let err = BackupDocument::parse(text.as_bytes()).unwrap_err();
        assert!(
            matches!(err, DocumentError::UnsupportedVersion { found: 2 }),
            "{err}"
        );
        assert!(err.to_string().contains("version 2"));
    }

    #[test]
    fn key_document_other_content_is_not_a_backup() {
        for other in [
            &b"hello world"[..],
            b"\x00\x01\xff",
            b"format = \"x\"\nversion = 1\n",
        ] {
            let err = BackupDocument::parse(other).unwrap_err();
            assert!(matches!(err, DocumentError::NotABackup(_)), "{err}");
        }
    }

    #[test]
    fn key_document_type_errors_do_not_echo_values() {
        let text = sample()
            .to_text()
            .unwrap()
            .replace("threshold = 2", "threshold = \"c2VjcmV0LXZhbHVl\"");
        let err = BackupDocument::parse(text.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(!err.contains("c2VjcmV0LXZhbHVl"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn key_document_rejects_impossible_threshold_and_duplicates() {
        assert!(BackupDocument::new("c", 3, 2, shares(&["a", "b"]), vec![]).is_err());
        assert!(BackupDocument::new("c", 1, 1, shares(&["a", "b"]), vec![]).is_err());
        assert!(BackupDocument::new("c", 1, 2, shares(&["a", "a"]), vec![]).is_err());
        assert!(BackupDocument::new("c", 1, 1, shares(&[]), vec![]).is_err());
    }

    #[test]
    fn key_document_debug_redacts_secrets() {
        let dbg = format!("{:?}", sample());
        assert!(
            !dbg.contains("c2hhcmUtb25l") && !dbg.contains("cf-token-123"),
            "{dbg}"
        );
    }
}
