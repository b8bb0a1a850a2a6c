//! Vault made ready for External Secrets Operator, on both paths, once ESO is installed (its
//! service account exists) and before the ClusterSecretStore is created.
//!
//! Done when ESO's service account can log in and read under the KV mount, the way ESO does
//! before it calls the store Ready. Otherwise: a root token (the fresh init's, held in memory
//! only, else a short-lived one made from the offline backup's key with `sys/generate-root`),
//! the mount, Kubernetes auth in-cluster, the policy and the role ([`crate::site::eso_auth`]),
//! then the token is revoked. No token is ever written anywhere or printed.
//!
//! On a restore, Vault's own config came back from the NAS: when it pins the dead cluster (an
//! old CA certificate or reviewer JWT), rebox shows that and asks before rewriting it.

use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;

use super::Ctx;
use crate::flow::Phase;
use crate::site::EsoLogin;

/// How long a configured Vault may take to let ESO in (TokenReview is one call; the margin
/// covers an API server or Vault pod that is slow to answer).
const LOGIN_DEADLINE: Duration = Duration::from_secs(60);

pub struct ReadyForEso;

#[async_trait]
impl Phase<Ctx> for ReadyForEso {
    fn id(&self) -> &'static str {
        "vault-for-eso"
    }
    fn title(&self) -> String {
        "Let ESO log in to Vault (KV mount, Kubernetes auth, policy, role)".into()
    }
    async fn pending(&self, ctx: &mut Ctx) -> Result<bool> {
        Ok(ctx.site.eso_login().await? != EsoLogin::Works)
    }
    fn describe(&self, ctx: &Ctx) -> Vec<String> {
        let e = &ctx.site.config.eso;
        vec![
            "get a root token: the one Vault's init returned, else a short-lived one from the offline backup's key (sys/generate-root)".into(),
            format!("mount KV {} at {}/ and enable Kubernetes auth at {}/ where missing", e.vault_kv_version, e.vault_kv_path, e.vault_auth_mount),
            format!("configure {}/ in-cluster (no pinned CA or reviewer JWT; asks first on a restore that pinned them)", e.vault_auth_mount),
            format!("write policy and role {} (read under {}/) for service account {}/{}", e.vault_role, e.vault_kv_path, e.namespace, e.service_account),
            "revoke the root token".into(),
        ]
    }
    async fn apply(&self, ctx: &mut Ctx) -> Result<()> {
        let token = match ctx.root_token.take() {
            Some(t) => t,
            None => {
                let shares = ctx.shares_from_backup()?;
                ctx.site.root_token(&shares).await?
            }
        };
        let work = async {
            if ctx.restore.is_some() {
                let auth = ctx.site.eso_auth(&token).await?;
                let pins = auth.pins();
                if !pins.is_empty() {
                    eprintln!(
                        "    the restored Kubernetes auth config of Vault holds {} — it cannot check the new cluster's tokens",
                        pins.join(" and ")
                    );
                    if !(ctx.confirm)("Rewrite it in-cluster (Vault then trusts this cluster)?")? {
                        anyhow::bail!(crate::next::hinted(
                            "not confirmed: Vault's Kubernetes auth still pins the old cluster, so ESO cannot log in",
                            "rerun and confirm, or fix it yourself (`bao write auth/kubernetes/config kubernetes_host=https://kubernetes.default.svc`)"
                        ));
                    }
                }
            }
            ctx.site.ready_vault_for_eso(&token).await
        }
        .await;
        let revoked = ctx.site.revoke(&token).await;
        for line in work? {
            eprintln!("    {line}");
        }
        revoked
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        let deadline = tokio::time::Instant::now() + LOGIN_DEADLINE;
        loop {
            let refused = match ctx.site.eso_login().await? {
                EsoLogin::Works => return Ok(()),
                EsoLogin::Refused(why) => why,
            };
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(crate::next::hinted(
                    format!(
                        "Vault still refuses ESO's login {}s after it was set up: {refused}",
                        LOGIN_DEADLINE.as_secs()
                    ),
                    "check Vault's log (`kubectl -n security logs vault-0`) for the TokenReview it makes; `rebox doctor` shows the store's state"
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
