//! The Vault client: a small typed client for seal-status, unseal, init, health and rekey
//! with verification, over Vault's HTTP API (`platform-facts.md` §1).
//!
//! The base URL comes from the caller: in the homelab it is the local end of an SSH tunnel
//! to Vault's service address (plain http); https with a private CA is supported
//! ([`VaultClientBuilder::ca_pem`], [`VaultClientBuilder::connect_to`]). None of these
//! endpoints needs a token: the key shares are the authorisation.
//!
//! - `admin`: the few token-authenticated calls (mounts, auth methods, policies, roles,
//!   revoking a token) and the Kubernetes-auth login.
//! - `root`: a short-lived root token from the unseal key (`sys/generate-root`, OTP flow).
//! - [`types`]: the answers, with Vault's field names; secrets are [`SecretText`].
//! - [`error`]: [`VaultError`], every refusal classified with the next step.
//! - `wire`: zeroizing request and response buffers.
//!
//! Secrets (shares, root token) never reach a log: requests are logged as method, path and
//! status only, bodies never, and error texts are scrubbed of the share that was sent.

mod admin;
mod error;
mod root;
mod types;
mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use admin::{Mount, TokenInfo};
pub use error::{KeyUse, VaultError};
pub use types::{
    Health, InitResult, RekeyKeys, RekeyStatus, RekeyUpdate, SealStatus, UnsealProgress,
    VerifyStatus, VerifyUpdate,
};

use crate::secret::SecretText;
use error::{classify, scrub, Op};

/// Settings for a [`VaultClient`].
pub struct VaultClientBuilder {
    url: String,
    ca_pem: Option<Vec<u8>>,
    connect_to: Option<SocketAddr>,
    connect_timeout: Duration,
    timeout: Duration,
}

impl VaultClientBuilder {
    /// Trust only this CA (PEM) for an https URL.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Connect to `addr` (e.g. the local end of a tunnel) whatever the URL's host resolves
    /// to, so https is verified against the name in the URL (e.g. `vault.security.svc`).
    pub fn connect_to(mut self, addr: SocketAddr) -> Self {
        self.connect_to = Some(addr);
        self
    }

    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Limit for a whole request (connect, send, answer).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    pub fn build(self) -> Result<VaultClient, VaultError> {
        let config = |reason: String| VaultError::Config { reason };
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| config(format!("`{}` is not a URL: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(config(format!(
                "`{}`: Vault's address must be http:// or https://",
                self.url
            )));
        }
        // Idempotent; reqwest's rustls needs a process-wide provider even for plain http.
        crate::init_crypto();
        // No proxy: the address is a local tunnel, and a key share must never take a detour.
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .user_agent(concat!("rebox/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout);
        if let Some(pem) = &self.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| config(format!("the Vault CA certificate is not PEM: {e}")))?;
            // reqwest accepts a file with no certificate in it; an empty trust store would
            // only fail later, at the first request, with a vaguer message.
            if certs.is_empty() {
                return Err(config(
                    "the Vault CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                        .into(),
                ));
            }
            b = b.tls_certs_only(certs);
        }
        if let Some(addr) = self.connect_to {
            let host = url
                .host_str()
                .ok_or_else(|| config(format!("`{}` has no host", self.url)))?;
            b = b.resolve(host, addr);
        }
        let http = b
            .build()
            .map_err(|e| config(format!("building the HTTP client: {}", chain(&e))))?;
        Ok(VaultClient {
            base: self.url.trim_end_matches('/').to_string(),
            http,
        })
    }
}

/// A client for one Vault.
#[derive(Clone)]
pub struct VaultClient {
    base: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultClient")
            .field("url", &self.base)
            .finish()
    }
}

#[derive(Serialize)]
struct KeyBody<'a> {
    key: &'a str,
}

#[derive(Serialize)]
struct KeyNonceBody<'a> {
    key: &'a str,
    nonce: &'a str,
}

#[derive(Serialize)]
struct NonceBody<'a> {
    nonce: &'a str,
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    complete: bool,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

/// An answer: status and body (wiped on drop).
struct Answer {
    status: u16,
    body: Zeroizing<Vec<u8>>,
}

/// Health codes that carry a health body rather than an error (`sys/health` defaults).
/// How long an unsealed Vault may take to elect itself raft leader (OpenBao's default
/// `performance_multiplier` 5 makes an election take several seconds).
const ACTIVE_DEADLINE: Duration = Duration::from_secs(60);

const HEALTH_CODES: [u16; 8] = [200, 429, 472, 473, 474, 501, 503, 530];

impl VaultClient {
    /// A client with default timeouts (connect 10 s, request 30 s).
    pub fn new(url: impl Into<String>) -> Result<VaultClient, VaultError> {
        Self::builder(url).build()
    }

    pub fn builder(url: impl Into<String>) -> VaultClientBuilder {
        VaultClientBuilder {
            url: url.into(),
            ca_pem: None,
            connect_to: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
        }
    }

    /// The base URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET /v1/sys/seal-status`.
    pub async fn seal_status(&self) -> Result<SealStatus, VaultError> {
        self.call(
            Op::SealStatus,
            Method::GET,
            "/v1/sys/seal-status",
            None,
            &[],
        )
        .await
    }

    /// `POST /v1/sys/unseal` with one share (hex or base64). Progress resets to 0 when the
    /// threshold is reached with a wrong set of shares ([`VaultError::BadKey`]).
    pub async fn unseal(&self, share: &SecretText) -> Result<SealStatus, VaultError> {
        let key = share.expose();
        let body = wire::secret_json(&KeyBody { key }, key.len());
        self.call(
            Op::Unseal,
            Method::POST,
            "/v1/sys/unseal",
            Some(body),
            &[key],
        )
        .await
    }

    /// `POST /v1/sys/unseal` with `reset`: forgets the shares of the current attempt. On an
    /// unsealed Vault there is nothing to forget and the status is returned.
    pub async fn unseal_reset(&self) -> Result<SealStatus, VaultError> {
        let body = wire::json(&serde_json::json!({ "reset": true }));
        match self
            .call(
                Op::UnsealReset,
                Method::POST,
                "/v1/sys/unseal",
                Some(body),
                &[],
            )
            .await
        {
            Err(VaultError::Other {
                status: 400,
                errors,
            }) if errors
                .iter()
                .any(|e| e.to_ascii_lowercase().contains("vault is unsealed")) =>
            {
                self.seal_status().await
            }
            other => other,
        }
    }

    /// Gives `shares` one by one until Vault unseals, calling `on_progress` after each
    /// accepted share. Stops at the first refusal (a wrong key is [`VaultError::BadKey`]).
    ///
    /// A partial attempt already in Vault (someone else's, or an interrupted run) is reset
    /// first: a stranger's share in the mix would make a good key look bad. If the shares run
    /// out below the threshold, the attempt is reset and [`VaultError::NotEnoughShares`]
    /// returned, so Vault is never left half way.
    pub async fn unseal_all(
        &self,
        shares: &[SecretText],
        mut on_progress: impl FnMut(UnsealProgress),
    ) -> Result<SealStatus, VaultError> {
        let mut status = self.seal_status().await?;
        if !status.initialized {
            return Err(VaultError::NotInitialized {
                url: self.base.clone(),
            });
        }
        if !status.sealed {
            return Ok(status);
        }
        if status.progress > 0 {
            tracing::info!(
                progress = status.progress,
                threshold = status.threshold,
                "resetting a partial unseal attempt found in Vault"
            );
            status = self.unseal_reset().await?;
        }
        for share in shares {
            let before = status.progress;
            status = match self.unseal(share).await {
                Ok(s) => s,
                Err(e) => {
                    // A malformed share is refused without ending the attempt: end it.
                    if matches!(e, VaultError::Malformed { .. }) {
                        let _ = self.unseal_reset().await;
                    }
                    return Err(e);
                }
            };
            if !status.sealed {
                on_progress(UnsealProgress::from(&status));
                self.wait_active().await?;
                return Ok(status);
            }
            // Vault ignores a share it already has; don't report a step that did not happen.
            if status.progress > before {
                on_progress(UnsealProgress::from(&status));
            }
        }
        let given = status.progress;
        let threshold = status.threshold;
        if given > 0 {
            let _ = self.unseal_reset().await;
        }
        Err(VaultError::NotEnoughShares { given, threshold })
    }

    /// Waits until an unsealed Vault is active: the real server (raft storage) answers
    /// `unseal` with `sealed: false` a moment before a leader is elected, and until then
    /// refuses every other call with 500 "local node not active but active cluster node not
    /// found" (sys/health: 429, standby). Polls health up to [`ACTIVE_DEADLINE`].
    pub async fn wait_active(&self) -> Result<(), VaultError> {
        let deadline = tokio::time::Instant::now() + ACTIVE_DEADLINE;
        loop {
            let h = self.health().await?;
            if h.code == 200 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(VaultError::NotActive {
                    url: self.base.clone(),
                    secs: ACTIVE_DEADLINE.as_secs(),
                    code: h.code,
                });
            }
            tracing::debug!(code = h.code, "Vault unsealed, not active yet");
            // Vault's health is only polled: no event announces a raft leader.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST /v1/sys/init`: creates the key (`shares` shares, `threshold` to unseal) and the
    /// root token. Refused by Vault if it is already initialized.
    pub async fn init(&self, shares: u32, threshold: u32) -> Result<InitResult, VaultError> {
        let body = wire::json(&serde_json::json!({
            "secret_shares": shares,
            "secret_threshold": threshold,
        }));
        self.call(Op::Init, Method::POST, "/v1/sys/init", Some(body), &[])
            .await
    }

    /// `GET /v1/sys/health`: the state with Vault's own status code (503 sealed, 501 not
    /// initialized, … are answers here, not errors).
    pub async fn health(&self) -> Result<Health, VaultError> {
        let ans = self
            .send(Op::Health, Method::GET, "/v1/sys/health", None)
            .await?;
        if !HEALTH_CODES.contains(&ans.status) {
            return Err(self.refusal(Op::Health, ans, &[]));
        }
        let mut h: Health = self.parse(&ans.body)?;
        h.code = ans.status;
        Ok(h)
    }

    /// `GET /v1/sys/rekey/init`.
    pub async fn rekey_status(&self) -> Result<RekeyStatus, VaultError> {
        self.call(
            Op::RekeyStatus,
            Method::GET,
            "/v1/sys/rekey/init",
            None,
            &[],
        )
        .await
    }

    /// `POST /v1/sys/rekey/init`: starts a rekey to a key of `shares` shares, `threshold` to
    /// unseal. A rekey already in progress is reported ([`VaultError::RekeyInProgress`], with
    /// its nonce), never cancelled.
    pub async fn rekey_init(
        &self,
        shares: u32,
        threshold: u32,
        require_verification: bool,
    ) -> Result<RekeyStatus, VaultError> {
        let body = wire::json(&serde_json::json!({
            "secret_shares": shares,
            "secret_threshold": threshold,
            "require_verification": require_verification,
        }));
        match self
            .call(
                Op::RekeyInit,
                Method::POST,
                "/v1/sys/rekey/init",
                Some(body),
                &[],
            )
            .await
        {
            Err(VaultError::RekeyInProgress { url, .. }) => {
                // Say which rekey is in the way (best effort: the refusal stands anyway).
                let current = self.rekey_status().await.ok();
                Err(VaultError::RekeyInProgress {
                    url,
                    nonce: current.as_ref().map(|s| s.nonce.clone()),
                    verification_pending: current
                        .as_ref()
                        .is_some_and(|s| s.verification_nonce.is_some()),
                })
            }
            other => other,
        }
    }

    /// `POST /v1/sys/rekey/update` with one share of the CURRENT key.
    pub async fn rekey_update(
        &self,
        share: &SecretText,
        nonce: &str,
    ) -> Result<RekeyUpdate, VaultError> {
        let key = share.expose();
        let body = wire::secret_json(&KeyNonceBody { key, nonce }, key.len() + nonce.len());
        let ans = self
            .send(
                Op::RekeyUpdate,
                Method::POST,
                "/v1/sys/rekey/update",
                Some(body),
            )
            .await?;
        if ans.status != 200 {
            return Err(self.refusal(Op::RekeyUpdate, ans, &[key]));
        }
        let done: Completion = self.parse(&ans.body)?;
        Ok(if done.complete {
            RekeyUpdate::Complete(self.parse(&ans.body)?)
        } else {
            RekeyUpdate::Progress(self.parse(&ans.body)?)
        })
    }

    /// `DELETE /v1/sys/rekey/init` with the rekey's nonce (Vault ≥ 1.20 requires it for a
    /// young rekey). During verification this keeps the CURRENT key valid.
    pub async fn rekey_cancel(&self, nonce: &str) -> Result<(), VaultError> {
        let body = wire::json(&NonceBody { nonce });
        let ans = self
            .send(
                Op::RekeyCancel,
                Method::DELETE,
                "/v1/sys/rekey/init",
                Some(body),
            )
            .await?;
        match ans.status {
            200 | 204 => Ok(()),
            _ => Err(self.refusal(Op::RekeyCancel, ans, &[])),
        }
    }

    /// `GET /v1/sys/rekey/verify`.
    pub async fn rekey_verify_status(&self) -> Result<VerifyStatus, VaultError> {
        self.call(
            Op::VerifyStatus,
            Method::GET,
            "/v1/sys/rekey/verify",
            None,
            &[],
        )
        .await
    }

    /// `POST /v1/sys/rekey/verify` with one share of the NEW key. At the threshold Vault
    /// rotates: from then on only the new shares unseal.
    pub async fn rekey_verify(
        &self,
        new_share: &SecretText,
        verify_nonce: &str,
    ) -> Result<VerifyUpdate, VaultError> {
        let key = new_share.expose();
        let body = wire::secret_json(
            &KeyNonceBody {
                key,
                nonce: verify_nonce,
            },
            key.len() + verify_nonce.len(),
        );
        let ans = self
            .send(Op::Verify, Method::POST, "/v1/sys/rekey/verify", Some(body))
            .await?;
        if ans.status != 200 {
            return Err(self.refusal(Op::Verify, ans, &[key]));
        }
        let done: Completion = self.parse(&ans.body)?;
        Ok(if done.complete {
            let c: types::VerifyComplete = self.parse(&ans.body)?;
            VerifyUpdate::Complete { nonce: c.nonce }
        } else {
            VerifyUpdate::Progress(self.parse(&ans.body)?)
        })
    }

    /// `DELETE /v1/sys/rekey/verify`: restarts verification only (new nonce, progress 0).
    pub async fn rekey_verify_restart(&self) -> Result<VerifyStatus, VaultError> {
        self.call(
            Op::VerifyRestart,
            Method::DELETE,
            "/v1/sys/rekey/verify",
            None,
            &[],
        )
        .await
    }

    // ---- plumbing ----

    /// One request whose 200 answer is `T`; anything else is classified.
    async fn call<T: DeserializeOwned>(
        &self,
        op: Op,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        secrets: &[&str],
    ) -> Result<T, VaultError> {
        let ans = self.send(op, method, path, body).await?;
        if ans.status != 200 {
            return Err(self.refusal(op, ans, secrets));
        }
        self.parse(&ans.body)
    }

    /// Sends a request and reads the whole answer. Logs method, path and status only.
    async fn send(
        &self,
        op: Op,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, VaultError> {
        self.send_as(None, op, method, path, body).await
    }

    /// [`Self::send`] with `X-Vault-Token: token` (marked sensitive, so never in a debug
    /// print of the request).
    async fn send_as(
        &self,
        token: Option<&SecretText>,
        op: Op,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, VaultError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = token {
            let mut v = reqwest::header::HeaderValue::from_str(t.expose()).map_err(|_| {
                VaultError::Config {
                    reason: "the Vault token holds characters a header cannot carry".into(),
                }
            })?;
            v.set_sensitive(true);
            req = req.header("X-Vault-Token", v);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        tracing::debug!(?op, %method, path, status, "vault answered");
        let body = wire::read_body(resp).await.map_err(|e| match e {
            wire::ReadError::Transport(e) => self.unreachable(&e),
            wire::ReadError::TooLarge => VaultError::Protocol {
                url: self.base.clone(),
                reason: format!("the answer is larger than {} bytes", wire::MAX_BODY),
            },
        })?;
        Ok(Answer { status, body })
    }

    /// A non-success answer as a [`VaultError`], with the sent secrets scrubbed from it.
    fn refusal(&self, op: Op, ans: Answer, secrets: &[&str]) -> VaultError {
        let mut errors = match serde_json::from_slice::<ErrorBody>(&ans.body) {
            Ok(b) => b.errors,
            // Not Vault's error shape (a proxy page, "404 page not found"): keep a snippet.
            Err(_) => {
                let text = String::from_utf8_lossy(&ans.body);
                let text: String = text.trim().chars().take(200).collect();
                if text.is_empty() {
                    vec![]
                } else {
                    vec![text]
                }
            }
        };
        scrub(&mut errors, secrets);
        classify(op, &self.base, ans.status, errors)
    }

    /// Parses a success body. The error names only the position, never the content (the
    /// body may hold new key shares).
    fn parse<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, VaultError> {
        serde_json::from_slice(body).map_err(|e| VaultError::Protocol {
            url: self.base.clone(),
            reason: format!(
                "unexpected JSON ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> VaultError {
        let reason = if e.is_timeout() {
            format!("no answer within the time limit ({})", chain(e))
        } else {
            chain(e)
        };
        VaultError::Unreachable {
            url: self.base.clone(),
            reason,
        }
    }
}

/// An error and its causes on one line ("error sending request: … : connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_builder_refuses_bad_urls_and_ca() {
        assert!(matches!(
            VaultClient::new("not a url"),
            Err(VaultError::Config { .. })
        ));
        assert!(matches!(
            VaultClient::new("ftp://x:1"),
            Err(VaultError::Config { .. })
        ));
        let e = VaultClient::builder("https://vault.security.svc:8200")
            .ca_pem("garbage")
            .build();
        assert!(matches!(e, Err(VaultError::Config { .. })), "{e:?}");
    }

    #[test]
    fn vault_client_url_has_no_trailing_slash() {
        let c = VaultClient::new("http://127.0.0.1:8200/").unwrap();
        assert_eq!(c.url(), "http://127.0.0.1:8200");
    }
}
