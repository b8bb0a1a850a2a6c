//! `SecretText`: the one type every secret string (key share, extra secret, passphrase text)
//! lives in while rebox holds it.
//!
//! It zeroizes its buffer on drop, prints as `[redacted]` in `Debug` and `Display`, and
//! (de)serializes transparently so the backup document can hold it directly.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
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

impl Serialize for SecretText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
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

    #[test]
    fn secret_key_fingerprint_is_sha256_of_text() {
        let s = SecretText::new("abc".into());
        assert_eq!(
            s.sha256_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
