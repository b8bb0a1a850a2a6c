//! A short-lived root token made from the unseal key: `sys/generate-root` with a one-time
//! pad (Vault ≥ 1.10 and OpenBao: the attempt returns an OTP; the last share returns the
//! token XORed with it, base64 without padding — vault `command/operator_generate_root.go`,
//! decode path). The caller revokes the token as soon as its work is done.

use base64::Engine;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::Op;
use super::{wire, VaultClient, VaultError};
use crate::secret::SecretText;

#[derive(Deserialize)]
struct Attempt {
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    started: bool,
    #[serde(default)]
    complete: bool,
    #[serde(default)]
    required: u32,
    #[serde(default)]
    encoded_token: String,
    #[serde(default)]
    otp: Option<SecretText>,
}

#[derive(Serialize)]
struct Share<'a> {
    key: &'a str,
    nonce: &'a str,
}

impl VaultClient {
    /// Whether a root token generation is in progress (someone else's, or an interrupted one).
    pub async fn generate_root_in_progress(&self) -> Result<bool, VaultError> {
        let a: Attempt = self
            .call(
                Op::GenerateRootInit,
                Method::GET,
                "/v1/sys/generate-root/attempt",
                None,
                &[],
            )
            .await?;
        Ok(a.started)
    }

    /// Cancels the root token generation in progress.
    pub async fn generate_root_cancel(&self) -> Result<(), VaultError> {
        let ans = self
            .send(
                Op::GenerateRootCancel,
                Method::DELETE,
                "/v1/sys/generate-root/attempt",
                None,
            )
            .await?;
        match ans.status {
            200 | 204 => Ok(()),
            _ => Err(self.refusal(Op::GenerateRootCancel, ans, &[])),
        }
    }

    /// Starts a generation, gives `shares`, and decodes the token. On a refused share the
    /// attempt is cancelled, so no half-done generation is left behind.
    pub async fn generate_root(&self, shares: &[SecretText]) -> Result<SecretText, VaultError> {
        let a: Attempt = self
            .call(
                Op::GenerateRootInit,
                Method::PUT,
                "/v1/sys/generate-root/attempt",
                Some(wire::json(&serde_json::json!({}))),
                &[],
            )
            .await?;
        let otp = a.otp.ok_or_else(|| VaultError::Protocol {
            url: self.base.clone(),
            reason: "sys/generate-root/attempt returned no one-time pad".into(),
        })?;
        let mut encoded = None;
        for share in shares {
            let body = wire::secret_json(
                &Share {
                    key: share.expose(),
                    nonce: &a.nonce,
                },
                share.expose().len(),
            );
            let step: Result<Attempt, VaultError> = self
                .call(
                    Op::GenerateRootUpdate,
                    Method::PUT,
                    "/v1/sys/generate-root/update",
                    Some(body),
                    &[share.expose()],
                )
                .await;
            let step = match step {
                Ok(s) => s,
                Err(e) => {
                    let _ = self.generate_root_cancel().await;
                    return Err(e);
                }
            };
            if step.complete {
                encoded = Some(Zeroizing::new(step.encoded_token));
                break;
            }
        }
        let Some(encoded) = encoded else {
            let _ = self.generate_root_cancel().await;
            return Err(VaultError::NotEnoughShares {
                given: shares.len() as u32,
                threshold: a.required,
            });
        };
        decode(&encoded, &otp).ok_or_else(|| VaultError::Protocol {
            url: self.base.clone(),
            reason: "the encoded root token does not match the one-time pad".into(),
        })
    }
}

/// base64 (padding optional) XOR the OTP's bytes.
fn decode(encoded: &str, otp: &SecretText) -> Option<SecretText> {
    let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
    let bytes = Zeroizing::new(engine.decode(encoded.trim_end_matches('=')).ok()?);
    let pad = otp.expose().as_bytes();
    if bytes.len() != pad.len() {
        return None;
    }
    let plain: Zeroizing<Vec<u8>> =
        Zeroizing::new(bytes.iter().zip(pad).map(|(b, p)| b ^ p).collect());
    let text = std::str::from_utf8(&plain).ok()?;
    Some(SecretText::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_root_token_decodes_with_its_pad_only() {
        // Seen from OpenBao 2.7.2: otp and encoded_token of one generation.
        let otp = SecretText::new("XVlNEUDtivblktB1kXM7XwC4qb".into());
        let t = decode("K3hdfyEwKRoTRVJVKSAVeBEtHHwBBhdWFzU", &otp).unwrap();
        assert_eq!(t.expose(), "s.11demnz309BTWIzuQKYqTbfW");
        let other = SecretText::new("AAAAAAAAAAAAAAAAAAAAAAAAAA".into());
        assert_ne!(
            decode("K3hdfyEwKRoTRVJVKSAVeBEtHHwBBhdWFzU", &other).map(|t| t.expose().to_owned()),
            Some("s.11demnz309BTWIzuQKYqTbfW".into())
        );
        assert!(decode("K3hd", &otp).is_none());
    }
}
