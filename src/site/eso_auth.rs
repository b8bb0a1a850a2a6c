//! Vault as ESO needs it: the KV mount the ClusterSecretStore reads, Kubernetes auth with
//! in-cluster config, a read-only policy on the store's paths and the role bound to ESO's
//! service account, every name from `[eso]` in rebox.toml (the store's template reads the same
//! fields). And the proof: a login as ESO's service account, then a read under the mount, as
//! ESO does before it calls the store Ready.
//!
//! In-cluster config means only `kubernetes_host`: no pinned CA and no reviewer JWT, so Vault
//! reads its own pod's service account files, and a rebuilt cluster (new CA, new tokens) keeps
//! working. A restored Vault whose config pins the dead cluster's CA or a reviewer JWT is
//! what [`EsoAuth::pins`] names.

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

use super::Site;
use crate::secret::SecretText;
use crate::vault::VaultError;

/// The API server as a pod sees it (vault-helm pods resolve cluster DNS; the serving
/// certificate of k3s names `kubernetes.default.svc`).
pub const KUBERNETES_HOST: &str = "https://kubernetes.default.svc";

/// Lifetime of the service account token rebox asks for to test ESO's login.
const PROBE_TOKEN_SECONDS: i64 = 600;

/// Whether ESO can get in, and if not what Vault said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EsoLogin {
    Works,
    Refused(String),
}

/// What the Kubernetes auth config holds that ties it to one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EsoAuth {
    /// `kubernetes_host` as configured (None: the auth method is not configured).
    pub host: Option<String>,
    /// A CA certificate is pinned (`kubernetes_ca_cert` set).
    pub pinned_ca: bool,
    /// A reviewer JWT is stored (`token_reviewer_jwt_set`).
    pub reviewer_jwt: bool,
}

impl EsoAuth {
    /// What ties the config to one cluster, one line each; empty when it is in-cluster.
    pub fn pins(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.pinned_ca {
            out.push("a pinned kubernetes_ca_cert (the CA of the cluster it was set up on)".into());
        }
        if self.reviewer_jwt {
            out.push(
                "a stored token_reviewer_jwt (a token of the cluster it was set up on)".into(),
            );
        }
        if let Some(host) = self.host.as_deref().filter(|h| *h != KUBERNETES_HOST) {
            out.push(format!(
                "kubernetes_host {host} (not the in-cluster {KUBERNETES_HOST})"
            ));
        }
        out
    }
}

/// How much of an existing setup rebox may rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// A Vault rebox just initialised: everything is rebox's, written as rebox.toml says.
    Fresh,
    /// A Vault with a setup of its own (restored, or found broken by doctor): what is missing
    /// is created; the auth config is rewritten only when `config` (the operator confirmed
    /// it, or it was missing), the role only when `role`; a policy or role that exists is
    /// otherwise the operator's and stays as it is.
    Repair { config: bool, role: bool },
}

/// The policy ESO's role gets: read the secrets under the KV mount, nothing else.
pub fn policy(kv_path: &str, kv_version: &str) -> String {
    let kv = kv_path.trim_matches('/');
    if kv_version == "v1" {
        format!("path \"{kv}/*\" {{\n  capabilities = [\"read\", \"list\"]\n}}\n")
    } else {
        format!(
            "path \"{kv}/data/*\" {{\n  capabilities = [\"read\"]\n}}\n\
             path \"{kv}/metadata/*\" {{\n  capabilities = [\"read\", \"list\"]\n}}\n"
        )
    }
}

impl Site {
    /// Logs in to Vault as ESO's service account with a fresh token from the API server
    /// (TokenRequest), then reads under the KV mount; the login's token is revoked again.
    pub async fn eso_login(&self) -> Result<EsoLogin> {
        let eso = &self.config.eso;
        let client = self.cluster().await?.client.clone();
        let sas: Api<ServiceAccount> = Api::namespaced(client, &eso.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(PROBE_TOKEN_SECONDS),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = sas
            .create_token_request(&eso.service_account, &PostParams::default(), &request)
            .await
            .with_context(|| {
                format!(
                    "asking the API server for a token of service account {}/{}",
                    eso.namespace, eso.service_account
                )
            })?;
        let jwt = SecretText::new(answer.status.map(|s| s.token).unwrap_or_default());
        let vault = self.vault().await?;
        let token = match vault
            .kubernetes_login(&eso.vault_auth_mount, &eso.vault_role, &jwt)
            .await
        {
            Ok(t) => t,
            Err(e @ (VaultError::Other { .. } | VaultError::Sealed { .. })) => {
                return Ok(EsoLogin::Refused(e.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let probe = format!(
            "{}/{}",
            eso.vault_kv_path.trim_matches('/'),
            probe_path(eso)
        );
        let read = vault.read(&token, &probe).await;
        let _ = vault.revoke_self(&token).await;
        match read {
            Ok(_) => Ok(EsoLogin::Works),
            Err(e @ VaultError::Other { .. }) => Ok(EsoLogin::Refused(format!(
                "logged in, but reading {probe} was refused: {e}"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The Kubernetes auth config as Vault holds it (needs a token that may read it).
    pub async fn eso_auth(&self, token: &SecretText) -> Result<EsoAuth> {
        let path = format!(
            "auth/{}/config",
            self.config.eso.vault_auth_mount.trim_matches('/')
        );
        let vault = self.vault().await?;
        if vault
            .auth_method(token, &self.config.eso.vault_auth_mount)
            .await?
            .is_none()
        {
            return Ok(EsoAuth::default());
        }
        let Some(cfg) = vault.read(token, &path).await? else {
            return Ok(EsoAuth::default());
        };
        Ok(EsoAuth {
            host: cfg["kubernetes_host"].as_str().map(String::from),
            pinned_ca: cfg["kubernetes_ca_cert"]
                .as_str()
                .is_some_and(|c| !c.trim().is_empty()),
            reviewer_jwt: cfg["token_reviewer_jwt_set"].as_bool().unwrap_or(false),
        })
    }

    /// Sets Vault up for ESO with `token` (a root token): each part created if missing; on
    /// [`Setup::Fresh`] the auth config, policy and role (re)written, so a rerun converges.
    /// Returns what it did, one line each. A KV mount of another type or version is
    /// refused, never replaced.
    pub async fn ready_vault_for_eso(
        &self,
        token: &SecretText,
        setup: Setup,
    ) -> Result<Vec<String>> {
        let eso = &self.config.eso;
        let vault = self.vault().await?;
        let mut done = Vec::new();
        let want_version = if eso.vault_kv_version == "v1" {
            "1"
        } else {
            "2"
        };
        match vault.secrets_engine(token, &eso.vault_kv_path).await? {
            None => {
                vault
                    .enable_kv(token, &eso.vault_kv_path, want_version)
                    .await?;
                done.push(format!("mounted KV v{want_version} at {}/", eso.vault_kv_path));
            }
            Some(m) if m.kind == "kv" && m.version().unwrap_or("1") == want_version => {}
            Some(m) => anyhow::bail!(crate::next::hinted(
                format!(
                    "Vault already has a {} engine (version {}) at {}/, but the store reads KV {}; rebox does not replace a mount that may hold data",
                    m.kind,
                    m.version().unwrap_or("1"),
                    eso.vault_kv_path,
                    eso.vault_kv_version
                ),
                "set eso.vault_kv_path / vault_kv_version in rebox.toml to what the mount is"
            )),
        }
        if vault
            .auth_method(token, &eso.vault_auth_mount)
            .await?
            .is_none()
        {
            vault
                .enable_auth(token, &eso.vault_auth_mount, "kubernetes")
                .await?;
            done.push(format!(
                "enabled Kubernetes auth at {}/",
                eso.vault_auth_mount
            ));
        }
        let mount = eso.vault_auth_mount.trim_matches('/');
        let (write_config, keep_existing, write_role) = match setup {
            Setup::Fresh => (true, false, true),
            Setup::Repair { config, role } => (config, true, role),
        };
        if write_config {
            // Only the host: Vault then reads its pod's CA and token (in-cluster config);
            // the empty fields clear what an older config pinned.
            vault
                .write(
                    token,
                    &format!("auth/{mount}/config"),
                    &json!({
                        "kubernetes_host": KUBERNETES_HOST,
                        "kubernetes_ca_cert": "",
                        "token_reviewer_jwt": "",
                    }),
                )
                .await?;
            done.push(format!(
                "configured auth/{mount} in-cluster ({KUBERNETES_HOST})"
            ));
        }
        let policy_path = format!("sys/policies/acl/{}", eso.vault_role);
        if keep_existing && vault.read(token, &policy_path).await?.is_some() {
            done.push(format!("kept the restored policy {}", eso.vault_role));
        } else {
            vault
                .write(
                    token,
                    &policy_path,
                    &json!({ "policy": policy(&eso.vault_kv_path, &eso.vault_kv_version) }),
                )
                .await?;
            done.push(format!(
                "wrote policy {} (read under {}/)",
                eso.vault_role, eso.vault_kv_path
            ));
        }
        let role_path = format!("auth/{mount}/role/{}", eso.vault_role);
        if keep_existing && !write_role && vault.read(token, &role_path).await?.is_some() {
            done.push(format!("kept the restored role {}", eso.vault_role));
        } else {
            vault
                .write(
                    token,
                    &role_path,
                    &json!({
                        "bound_service_account_names": [eso.service_account],
                        "bound_service_account_namespaces": [eso.namespace],
                        "token_policies": [eso.vault_role],
                        "token_ttl": "1h",
                    }),
                )
                .await?;
            done.push(format!(
                "wrote role {} for service account {}/{}",
                eso.vault_role, eso.namespace, eso.service_account
            ));
        }
        Ok(done)
    }

    /// Reads back what ESO's login depends on, with `token`: the auth config and whether the
    /// role binds ESO's service account in its namespace.
    pub async fn eso_setup(&self, token: &SecretText) -> Result<EsoSetup> {
        let eso = &self.config.eso;
        let auth = self.eso_auth(token).await?;
        let mount = eso.vault_auth_mount.trim_matches('/');
        let role = match self
            .vault()
            .await?
            .read(token, &format!("auth/{mount}/role/{}", eso.vault_role))
            .await?
        {
            None => RoleState::Missing,
            Some(role) => {
                let has = |field: &str, want: &str| {
                    role[field]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|v| v == want || v == "*"))
                };
                if has("bound_service_account_names", &eso.service_account)
                    && has("bound_service_account_namespaces", &eso.namespace)
                {
                    RoleState::BindsEso
                } else {
                    RoleState::Unbound
                }
            }
        };
        Ok(EsoSetup { auth, role })
    }
}

/// ESO's role as Vault holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleState {
    Missing,
    /// It exists but does not bind ESO's service account in ESO's namespace.
    Unbound,
    BindsEso,
}

/// What ESO's login depends on, as read back from Vault ([`Site::eso_setup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsoSetup {
    pub auth: EsoAuth,
    pub role: RoleState,
}

impl EsoSetup {
    /// The auth config is missing or ties Vault to one cluster.
    pub fn config_wrong(&self) -> bool {
        self.auth.host.is_none() || !self.auth.pins().is_empty()
    }

    /// What is wrong, one line each, in `eso`'s names; empty when ESO can log in.
    pub fn problems(&self, eso: &crate::config::Eso) -> Vec<String> {
        let mut out = Vec::new();
        if self.auth.host.is_none() {
            out.push(format!("auth/{} has no config", eso.vault_auth_mount));
        }
        out.extend(self.auth.pins());
        match self.role {
            RoleState::Missing => out.push(format!("role {} is missing", eso.vault_role)),
            RoleState::Unbound => out.push(format!(
                "role {} is not bound to service account {}/{}",
                eso.vault_role, eso.namespace, eso.service_account
            )),
            RoleState::BindsEso => {}
        }
        out
    }
}

/// A path under the mount that ESO's policy may read (404 is an answer; 403 is not).
fn probe_path(eso: &crate::config::Eso) -> &'static str {
    if eso.vault_kv_version == "v1" {
        "rebox-login-probe"
    } else {
        "data/rebox-login-probe"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eso_policy_reads_only_under_the_mount() {
        let p = policy("secret", "v2");
        assert!(p.contains("path \"secret/data/*\""), "{p}");
        assert!(p.contains("path \"secret/metadata/*\""), "{p}");
        assert!(!p.contains("update") && !p.contains("create") && !p.contains("sudo"));
        assert!(policy("kv1/", "v1").contains("path \"kv1/*\""));
    }

    #[test]
    fn eso_auth_pins_name_what_ties_it_to_a_cluster() {
        assert!(EsoAuth::default().pins().is_empty());
        let a = EsoAuth {
            host: Some(KUBERNETES_HOST.into()),
            pinned_ca: true,
            reviewer_jwt: true,
        };
        assert_eq!(a.pins().len(), 2);
    }
}
