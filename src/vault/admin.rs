//! The token-authenticated calls rebox makes to ready Vault for External Secrets Operator
//! (a KV mount, the Kubernetes auth method, its config, a policy and a role), revoking the
//! token afterwards, and the Kubernetes-auth login that proves ESO can get in.
//!
//! Endpoints and bodies as Vault's API documents them (`sys/mounts`, `sys/auth`,
//! `sys/policies/acl`, `auth/<mount>/config|role|login`, `auth/token/revoke-self`); OpenBao
//! answers the same. The token and the login JWT go in a header or a zeroizing body only.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::Op;
use super::{wire, VaultClient, VaultError};
use crate::secret::SecretText;

/// A mounted secrets engine or auth method, as `sys/mounts` / `sys/auth` list them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub options: Option<std::collections::BTreeMap<String, String>>,
}

impl Mount {
    /// The KV engine's version option (`"2"`), if any.
    pub fn version(&self) -> Option<&str> {
        self.options.as_ref()?.get("version").map(String::as_str)
    }
}

/// What `lookup-accessor` tells of a token (never the token itself).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TokenInfo {
    pub accessor: String,
    #[serde(default)]
    pub policies: Vec<String>,
    /// Unix seconds, Vault's clock.
    #[serde(default)]
    pub creation_time: i64,
    #[serde(default)]
    pub display_name: String,
}

impl TokenInfo {
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }
}

#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

#[derive(Serialize)]
struct LoginBody<'a> {
    role: &'a str,
    jwt: &'a str,
}

#[derive(Deserialize)]
struct LoginAnswer {
    auth: LoginAuth,
}

#[derive(Deserialize)]
struct LoginAuth {
    client_token: SecretText,
}

/// Vault's 400 for a mount or auth path that is taken (`path is already in use at secret/`).
fn already_in_use(e: &VaultError) -> bool {
    matches!(e, VaultError::Other { status: 400, errors } if errors.iter().any(|m| m.contains("already in use")))
}

/// The refusal for a path taken by something other than what was asked for.
fn in_use_by(path: &str, m: &Mount, wanted: &str) -> VaultError {
    let version = m
        .version()
        .map(|v| format!(" (version {v})"))
        .unwrap_or_default();
    VaultError::Other {
        status: 400,
        errors: vec![format!(
            "{} is already in use by a {}{version} mount, not {wanted}; rebox does not replace a mount that may hold data",
            mount_key(path),
            m.kind
        )],
    }
}

/// `path` with its surrounding slashes trimmed: Vault lists mounts as `secret/`.
fn mount_key(path: &str) -> String {
    format!("{}/", path.trim_matches('/'))
}

impl VaultClient {
    /// The secrets engine mounted at `path`, if any (`GET /v1/sys/mounts`).
    pub async fn secrets_engine(
        &self,
        token: &SecretText,
        path: &str,
    ) -> Result<Option<Mount>, VaultError> {
        self.mount_at(token, "/v1/sys/mounts", path).await
    }

    /// The auth method mounted at `path`, if any (`GET /v1/sys/auth`).
    pub async fn auth_method(
        &self,
        token: &SecretText,
        path: &str,
    ) -> Result<Option<Mount>, VaultError> {
        self.mount_at(token, "/v1/sys/auth", path).await
    }

    async fn mount_at(
        &self,
        token: &SecretText,
        list: &str,
        path: &str,
    ) -> Result<Option<Mount>, VaultError> {
        let all: Data<std::collections::BTreeMap<String, Value>> =
            self.admin(token, Method::GET, list, None).await?;
        match all.data.get(&mount_key(path)) {
            None => Ok(None),
            Some(v) => Ok(Some(self.parse(v.to_string().as_bytes())?)),
        }
    }

    /// Mounts KV (`version` "1" or "2") at `path` (`POST /v1/sys/mounts/<path>`).
    pub async fn enable_kv(
        &self,
        token: &SecretText,
        path: &str,
        version: &str,
    ) -> Result<(), VaultError> {
        let body = serde_json::json!({"type": "kv", "options": {"version": version}});
        let url = format!("/v1/sys/mounts/{}", path.trim_matches('/'));
        match self.admin_write(token, Method::POST, &url, &body).await {
            Err(e) if already_in_use(&e) => {
                // Done only if what is there IS the engine asked for: a KV of another
                // version, or another engine, is never taken for it.
                match self.secrets_engine(token, path).await? {
                    Some(m) if m.kind == "kv" && m.version().unwrap_or("1") == version => Ok(()),
                    Some(m) => Err(in_use_by(path, &m, &format!("KV v{version}"))),
                    None => Err(e),
                }
            }
            other => other,
        }
    }

    /// Enables the auth method `kind` at `path` (`POST /v1/sys/auth/<path>`).
    pub async fn enable_auth(
        &self,
        token: &SecretText,
        path: &str,
        kind: &str,
    ) -> Result<(), VaultError> {
        let body = serde_json::json!({ "type": kind });
        let url = format!("/v1/sys/auth/{}", path.trim_matches('/'));
        match self.admin_write(token, Method::POST, &url, &body).await {
            Err(e) if already_in_use(&e) => match self.auth_method(token, path).await? {
                Some(m) if m.kind == kind => Ok(()),
                Some(m) => Err(in_use_by(path, &m, kind)),
                None => Err(e),
            },
            other => other,
        }
    }

    /// `GET /v1/<path>`'s `data`, or None on 404.
    pub async fn read(&self, token: &SecretText, path: &str) -> Result<Option<Value>, VaultError> {
        let url = format!("/v1/{}", path.trim_matches('/'));
        self.admin_opt(token, Method::GET, &url, None, &[404]).await
    }

    /// `POST /v1/<path>` with `body` (config, policy, role): 200 or 204.
    pub async fn write(
        &self,
        token: &SecretText,
        path: &str,
        body: &Value,
    ) -> Result<(), VaultError> {
        let url = format!("/v1/{}", path.trim_matches('/'));
        self.admin_write(token, Method::POST, &url, body).await
    }

    /// Revokes `token` itself (`POST /v1/auth/token/revoke-self`).
    pub async fn revoke_self(&self, token: &SecretText) -> Result<(), VaultError> {
        let ans = self
            .send_as(
                Some(token),
                Op::RevokeSelf,
                Method::POST,
                "/v1/auth/token/revoke-self",
                None,
            )
            .await?;
        match ans.status {
            200 | 204 => Ok(()),
            _ => Err(self.refusal(Op::RevokeSelf, ans, &[token.expose()])),
        }
    }

    /// The accessor of `token` (`GET /v1/auth/token/lookup-self`): what names a token
    /// without being one, so it can be recorded and later revoked.
    pub async fn accessor_of(&self, token: &SecretText) -> Result<String, VaultError> {
        #[derive(Deserialize)]
        struct Lookup {
            accessor: String,
        }
        let d: Data<Lookup> = self
            .admin(token, Method::GET, "/v1/auth/token/lookup-self", None)
            .await?;
        Ok(d.data.accessor)
    }

    /// The token named by `accessor` (`POST /v1/auth/token/lookup-accessor`), or None when
    /// Vault knows no such token (revoked or expired).
    pub async fn lookup_accessor(
        &self,
        token: &SecretText,
        accessor: &str,
    ) -> Result<Option<TokenInfo>, VaultError> {
        let body = wire::json(&serde_json::json!({ "accessor": accessor }));
        // Vault answers 400 "invalid accessor" for one it does not know (OpenBao too).
        self.admin_opt(
            token,
            Method::POST,
            "/v1/auth/token/lookup-accessor",
            Some(body),
            &[400, 404],
        )
        .await
    }

    /// Every token accessor Vault holds (`LIST /v1/auth/token/accessors`; needs sudo).
    pub async fn token_accessors(&self, token: &SecretText) -> Result<Vec<String>, VaultError> {
        #[derive(Deserialize)]
        struct Keys {
            #[serde(default)]
            keys: Vec<String>,
        }
        let list = Method::from_bytes(b"LIST").expect("LIST is a valid method");
        let d: Data<Keys> = self
            .admin(token, list, "/v1/auth/token/accessors", None)
            .await?;
        Ok(d.data.keys)
    }

    /// Revokes the token named by `accessor` (`POST /v1/auth/token/revoke-accessor`).
    pub async fn revoke_accessor(
        &self,
        token: &SecretText,
        accessor: &str,
    ) -> Result<(), VaultError> {
        let body = serde_json::json!({ "accessor": accessor });
        self.admin_write(token, Method::POST, "/v1/auth/token/revoke-accessor", &body)
            .await
    }

    /// Logs in with the Kubernetes auth method at `mount` as `role`, with a service
    /// account's `jwt`; returns the client token Vault issued.
    pub async fn kubernetes_login(
        &self,
        mount: &str,
        role: &str,
        jwt: &SecretText,
    ) -> Result<SecretText, VaultError> {
        let body = wire::secret_json(
            &LoginBody {
                role,
                jwt: jwt.expose(),
            },
            jwt.expose().len(),
        );
        let url = format!("/v1/auth/{}/login", mount.trim_matches('/'));
        let ans = self.send(Op::Login, Method::POST, &url, Some(body)).await?;
        if ans.status != 200 {
            return Err(self.refusal(Op::Login, ans, &[jwt.expose()]));
        }
        Ok(self.parse::<LoginAnswer>(&ans.body)?.auth.client_token)
    }

    async fn admin<T: serde::de::DeserializeOwned>(
        &self,
        token: &SecretText,
        method: Method,
        path: &str,
        body: Option<bytes::Bytes>,
    ) -> Result<T, VaultError> {
        let ans = self
            .send_as(Some(token), Op::Admin, method, path, body)
            .await?;
        if ans.status != 200 {
            return Err(self.refusal(Op::Admin, ans, &[token.expose()]));
        }
        self.parse(&ans.body)
    }

    /// [`Self::admin`] where the statuses in `absent` mean "no such thing": `data` or None.
    async fn admin_opt<T: serde::de::DeserializeOwned>(
        &self,
        token: &SecretText,
        method: Method,
        path: &str,
        body: Option<bytes::Bytes>,
        absent: &[u16],
    ) -> Result<Option<T>, VaultError> {
        let ans = self
            .send_as(Some(token), Op::Admin, method, path, body)
            .await?;
        match ans.status {
            200 => Ok(Some(self.parse::<Data<T>>(&ans.body)?.data)),
            s if absent.contains(&s) => Ok(None),
            _ => Err(self.refusal(Op::Admin, ans, &[token.expose()])),
        }
    }

    async fn admin_write(
        &self,
        token: &SecretText,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<(), VaultError> {
        let ans = self
            .send_as(Some(token), Op::Admin, method, path, Some(wire::json(body)))
            .await?;
        match ans.status {
            200 | 204 => Ok(()),
            _ => Err(self.refusal(Op::Admin, ans, &[token.expose()])),
        }
    }
}
