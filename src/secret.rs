//! `SecretText`: the one type every secret string (key share, extra secret, passphrase text)
//! lives in while rebox holds it.
//!
//! It zeroizes its buffer on drop and prints as `[redacted]` in `Debug` and `Display`. It
//! deserializes from a plain string (Vault's answers, the backup document), but it does NOT
//! implement `Serialize`: a report or a `--json` answer that gained such a field would print the
//! secret. The few places that must write it out (the backup document, the rotation journal,
//! both encrypted before they leave memory) name [`SecretText::serialize_exposed`] or
//! [`serialize_exposed_all`] with `#[serde(serialize_with = …)]`.
//!
//! It lives here, below every other module, so that `vault/`, `keys/` and the rest can all use
//! it without depending on each other.

use std::fmt;

use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serializer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A secret string, wiped from memory when dropped and never shown by `{:?}` or `{}`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    /// Takes ownership of `s` without copying it (a copy would leave an unwiped buffer).
    pub fn new(s: String) -> Self {
        SecretText(Zeroizing::new(s))
    }

    /// The secret itself. Callers must not log, format or copy it into plain `String`s.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256 of the UTF-8 text: the fingerprint stored beside each secret.
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl SecretText {
    /// Writes the secret itself: for `#[serde(serialize_with = "SecretText::serialize_exposed")]`
    /// on a field of a document that is encrypted before it leaves memory.
    pub fn serialize_exposed<S: Serializer>(secret: &SecretText, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&secret.0)
    }
}

/// [`SecretText::serialize_exposed`] for a list of secrets (key shares).
pub fn serialize_exposed_all<S: Serializer>(
    secrets: &[SecretText],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(secrets.len()))?;
    for secret in secrets {
        seq.serialize_element(secret.expose())?;
    }
    seq.end()
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The String is moved, not copied, into the zeroizing wrapper.
        String::deserialize(d).map(SecretText::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_key_text_is_redacted_in_debug_and_display() {
        let s = SecretText::new("hunter2-key".into());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "hunter2-key");
    }

    /// Resolves to the inherent `IMPLS` (true) only when `T: Serialize`, else to the trait's.
    struct Probe<T>(std::marker::PhantomData<T>);
    trait NotSerialize {
        const IMPLS: bool = false;
    }
    impl<T> NotSerialize for Probe<T> {}
    impl<T: serde::Serialize> Probe<T> {
        #[allow(dead_code)]
        const IMPLS: bool = true;
    }

    #[test]
    #[allow(clippy::assertions_on_constants)] // the constant is what the type system decided
    fn secret_text_does_not_implement_serialize() {
        assert!(
            Probe::<String>::IMPLS,
            "the probe itself must see Serialize"
        );
        assert!(
            !Probe::<SecretText>::IMPLS,
            "SecretText must serialize only through serialize_exposed"
        );
    }

    #[test]
    fn secret_text_serializes_only_where_named() {
        #[derive(serde::Serialize)]
        struct Doc {
            #[serde(serialize_with = "SecretText::serialize_exposed")]
            one: SecretText,
            #[serde(serialize_with = "serialize_exposed_all")]
            all: Vec<SecretText>,
        }
        let doc = Doc {
            one: SecretText::new("k1".into()),
            all: vec![SecretText::new("k2".into()), SecretText::new("k3".into())],
        };
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"one":"k1","all":["k2","k3"]}"#
        );
    }

    #[test]
    fn secret_key_fingerprint_is_sha256_of_text() {
        let s = SecretText::new("abc".into());
        assert_eq!(
            s.sha256_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
