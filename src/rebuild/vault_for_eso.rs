//! Vault made ready for External Secrets Operator, right after the unseal and before any
//! chart: the KV mount, Kubernetes auth configured in-cluster, the read-only policy and the
//! role bound to ESO's service account ([`crate::site::eso_auth`]), every name from `[eso]`.
//!
//! It takes a root token: on the fresh path the one of Vault's init answer (held in memory
//! only, since the init), else a short-lived one made from the offline backup's key; either
//! is recorded by accessor on the server and revoked at the end of the phase, whatever the
//! setup's outcome ([`crate::site::root_token`]), so none is held through the chart phases
//! and none outlives a run that stops early.
//!
//! On a restore, Vault's own config came back from the NAS: what is missing is created, a
//! config that pins the dead cluster (its CA, a reviewer JWT, another host) is shown and
//! rewritten after a confirmation, and a policy or role that exists is left as it is.
//!
//! Done when ClusterSecretStore is Ready (ESO itself logged in): `pending()` only reads it,
//! and a plan makes no token, no TokenRequest and no login.

use anyhow::{Context, Result};
use async_trait::async_trait;

use super::gitops::StoreReady;
use super::Ctx;
use crate::flow::{Phase, Steps};
use crate::site::eso_auth::Setup;
use crate::site::root_token::RootToken;

pub struct ReadyForEso;

#[async_trait]
impl Phase<Ctx> for ReadyForEso {
    fn id(&self) -> &'static str {
        "vault-for-eso"
    }
    fn title(&self) -> String {
        "Set Vault up for ESO (KV mount, Kubernetes auth, policy, role); revoke the root token"
            .into()
    }
    async fn pending(&self, ctx: &mut Ctx) -> Result<bool> {
        // ESO's own login is the proof; before its store exists there is work to do (the
        // setup is idempotent).
        Ok(!StoreReady::ready_now(ctx).await)
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        let e = &ctx.site.config.eso;
        let get_token = if ctx.restore.is_some() {
            "make a short-lived root token from the offline backup's key (sys/generate-root), recorded by accessor on the server; revoke any an earlier run left"
        } else {
            "take the root token of Vault's init answer (in memory only; after a resumed run, a short-lived one from the offline backup's key), recorded by accessor on the server; revoke any an earlier run left"
        };
        let pinned = format!(
            "read auth/{}/config; if it pins the old cluster (a CA, a reviewer JWT, another host), show it and ask before rewriting it in-cluster",
            e.vault_auth_mount
        );
        let mut setup = vec![
            format!(
                "mount KV {} at {}/ and enable Kubernetes auth at {}/ where missing",
                e.vault_kv_version, e.vault_kv_path, e.vault_auth_mount
            ),
            format!(
                "configure auth/{}/ in-cluster (kubernetes_host only: no pinned CA or reviewer JWT)",
                e.vault_auth_mount
            ),
            format!(
                "write policy and role {} (read under {}/) for service account {}/{}",
                e.vault_role, e.vault_kv_path, e.namespace, e.service_account
            ),
        ];
        if ctx.restore.is_some() {
            setup[1] = format!(
                "configure auth/{}/ in-cluster if it is missing or the rewrite was confirmed",
                e.vault_auth_mount
            );
            setup[2] = format!(
                "write policy and role {} where missing (restored ones are kept)",
                e.vault_role
            );
        }
        let read_back = format!(
            "read back the config and role {}: in-cluster, bound to {}/{}",
            e.vault_role, e.namespace, e.service_account
        );
        let revoke =
            "revoke the root token (whatever the setup's outcome) and take it off the record";

        let token = steps.run(get_token, root_token(ctx)).await?;
        let work = async {
            let setup_kind = if ctx.restore.is_some() {
                let rewrite = steps
                    .run(pinned, check_restored_config(ctx, token.as_ref()))
                    .await?;
                Setup::Repair {
                    config: rewrite.unwrap_or(false),
                    role: false,
                }
            } else {
                Setup::Fresh
            };
            steps
                .run_lines(setup, set_up(ctx, token.as_ref(), setup_kind))
                .await?;
            steps
                .run(read_back, read_back_setup(ctx, token.as_ref()))
                .await?;
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if !steps.planning() {
            crate::failpoint::exit_after("vault-for-eso:set-up");
        }
        steps.run(revoke, revoke_token(ctx, token)).await?;
        work
    }
    async fn verify(&self, _ctx: &mut Ctx) -> Result<()> {
        // The setup was read back with the token before its revocation; ESO's login is
        // proven by the store's Ready wait (secret-store-ready), which needs no token.
        Ok(())
    }
}

/// The init's token (taken into the record now that Vault is unsealed), else one from the key.
async fn root_token(ctx: &mut Ctx) -> Result<RootToken> {
    let (token, revoked) = match ctx.init_root_token.take() {
        Some((pending, token)) => ctx.site.adopt_root_token(pending, token).await?,
        None => {
            let shares = ctx.shares_from_backup()?;
            ctx.site
                .root_token_from_key(&shares)
                .await
                .context("making a short-lived root token with the offline backup's key")?
        }
    };
    for line in revoked {
        eprintln!("    {line}");
    }
    Ok(token)
}

/// A restored config that pins the dead cluster cannot check the new cluster's tokens: shown,
/// and rewritten only once the operator agrees. A missing config is simply written.
async fn check_restored_config(ctx: &Ctx, token: Option<&RootToken>) -> Result<bool> {
    let token = token.context("no root token")?;
    let auth = ctx.site.eso_auth(&token.token).await?;
    if auth.host.is_none() {
        return Ok(true);
    }
    let pins = auth.pins();
    if pins.is_empty() {
        return Ok(false);
    }
    eprintln!(
        "    the restored Kubernetes auth config of Vault holds {}: it cannot check the new cluster's tokens",
        pins.join(" and ")
    );
    if !(ctx.confirm)("Rewrite it in-cluster (Vault then trusts this cluster's tokens)?")? {
        anyhow::bail!(crate::next::hinted(
            "not confirmed: Vault's Kubernetes auth still pins the old cluster, so ESO cannot log in",
            format!(
                "rerun and confirm (or pass --yes), or rewrite it yourself: `bao write auth/{}/config kubernetes_host={}`",
                ctx.site.config.eso.vault_auth_mount.trim_matches('/'),
                crate::site::eso_auth::KUBERNETES_HOST
            )
        ));
    }
    Ok(true)
}

async fn set_up(ctx: &Ctx, token: Option<&RootToken>, setup: Setup) -> Result<()> {
    let token = token.context("no root token")?;
    for line in ctx.site.ready_vault_for_eso(&token.token, setup).await? {
        eprintln!("    {line}");
    }
    Ok(())
}

async fn read_back_setup(ctx: &Ctx, token: Option<&RootToken>) -> Result<()> {
    let token = token.context("no root token")?;
    let problems = ctx
        .site
        .eso_setup(&token.token)
        .await?
        .problems(&ctx.site.config.eso);
    if !problems.is_empty() {
        anyhow::bail!(crate::next::hinted(
            format!(
                "Vault is not set up for ESO after the setup: {}",
                problems.join("; ")
            ),
            "fix it in Vault (`bao read auth/kubernetes/config`, `bao read auth/kubernetes/role/…`) or in rebox.toml's [eso], then rerun"
        ));
    }
    Ok(())
}

async fn revoke_token(ctx: &Ctx, token: Option<RootToken>) -> Result<()> {
    match token {
        Some(t) => ctx.site.revoke_root_token(t).await,
        None => Ok(()),
    }
}
