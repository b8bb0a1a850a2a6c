//! The end of the fresh path after the addons are applied: ESO's ClusterSecretStore Ready
//! (ESO rollout-restarted when the store stays degraded, platform-facts §4) and Argo CD's root
//! Application Synced and Healthy (§5). Both waits are watches with deadlines.

use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::wait::await_condition;
use kube::Api;

use super::Ctx;
use crate::flow::{Phase, Steps};
use crate::site::readiness::{
    app_resource, app_state, app_synced, rollout_restart, store_ready, store_resource, store_state,
};

/// How long the store gets before ESO is restarted.
const STORE_FIRST_DEADLINE: Duration = Duration::from_secs(60);
/// How long the store gets after the restart.
const STORE_DEADLINE: Duration = Duration::from_secs(300);
/// How long Argo CD gets to sync the root Application.
const APP_DEADLINE: Duration = Duration::from_secs(600);

/// Waits for ClusterSecretStore `k8s-secrets` to be Ready; restarts ESO when it stays degraded.
pub struct StoreReady;

impl StoreReady {
    async fn api(ctx: &mut Ctx) -> Result<Api<DynamicObject>> {
        Ok(Api::all_with(
            ctx.site.cluster().await?.client.clone(),
            &store_resource(),
        ))
    }

    /// Whether the store is Ready now (false when it or the cluster cannot be read): one
    /// read, nothing written.
    pub(super) async fn ready_now(ctx: &mut Ctx) -> bool {
        let store = ctx.site.config.eso.store.clone();
        let Ok(api) = Self::api(ctx).await else {
            return false;
        };
        store_ready(api.get_opt(&store).await.ok().flatten().as_ref())
    }

    /// Waits up to `deadline`; Ok(true) when Ready.
    async fn wait(ctx: &mut Ctx, deadline: Duration) -> Result<bool> {
        let api = Self::api(ctx).await?;
        let store = ctx.site.config.eso.store.clone();
        match tokio::time::timeout(deadline, await_condition(api, &store, store_ready)).await {
            Ok(r) => {
                r.with_context(|| format!("watching ClusterSecretStore {store}"))?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// `kubectl rollout restart` for each ESO Deployment: a new pod-template annotation.
    async fn restart_eso(ctx: &mut Ctx) -> Result<()> {
        let ns = ctx.site.config.eso.namespace.clone();
        let names = ctx.site.config.eso.deployments.clone();
        rollout_restart(&ctx.site.cluster().await?.client, &ns, &names).await
    }
}

#[async_trait]
impl Phase<Ctx> for StoreReady {
    fn id(&self) -> &'static str {
        "secret-store-ready"
    }
    fn title(&self) -> String {
        "Wait for the ClusterSecretStore to be Ready".into()
    }
    async fn pending(&self, ctx: &mut Ctx) -> Result<bool> {
        Ok(!Self::ready_now(ctx).await)
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        let eso = &ctx.site.config.eso;
        let first = format!(
            "wait up to {}s for ClusterSecretStore {} to be Ready",
            STORE_FIRST_DEADLINE.as_secs(),
            eso.store
        );
        let again = format!(
            "if it stays degraded: rollout-restart Deployments {}/{} and wait again (up to {}s)",
            eso.namespace,
            eso.deployments.join(", "),
            STORE_DEADLINE.as_secs()
        );
        if steps
            .run(first, Self::wait(ctx, STORE_FIRST_DEADLINE))
            .await?
            == Some(true)
        {
            return Ok(());
        }
        // ESO re-validates a degraded store only every few minutes: restart it.
        steps.run(again, Self::restart_and_wait(ctx)).await?;
        Ok(())
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        anyhow::ensure!(
            !self.pending(ctx).await?,
            "ClusterSecretStore {} is not Ready after the wait",
            ctx.site.config.eso.store
        );
        Ok(())
    }
}

impl StoreReady {
    async fn restart_and_wait(ctx: &mut Ctx) -> Result<()> {
        Self::restart_eso(ctx).await?;
        if Self::wait(ctx, STORE_DEADLINE).await? {
            return Ok(());
        }
        let store = ctx.site.config.eso.store.clone();
        let ns = ctx.site.config.eso.namespace.clone();
        let seen = Self::api(ctx).await?.get_opt(&store).await.ok().flatten();
        anyhow::bail!(crate::next::hinted(format!("ClusterSecretStore {store} is not Ready after {}s: {}", STORE_DEADLINE.as_secs(), store_state(seen.as_ref())), format!("`kubectl describe clustersecretstore {store}` and `kubectl -n {ns} logs deployment/external-secrets` on the server")))
    }
}

/// Waits for the root Application to be Synced and Healthy.
pub struct AppsSynced;

impl AppsSynced {
    async fn api(ctx: &mut Ctx) -> Result<Api<DynamicObject>> {
        let ns = ctx.site.config.argocd.namespace.clone();
        Ok(Api::namespaced_with(
            ctx.site.cluster().await?.client.clone(),
            &ns,
            &app_resource(),
        ))
    }
}

#[async_trait]
impl Phase<Ctx> for AppsSynced {
    fn id(&self) -> &'static str {
        "gitops-synced"
    }
    fn title(&self) -> String {
        "Wait for Argo CD to sync the root Application".into()
    }
    async fn pending(&self, ctx: &mut Ctx) -> Result<bool> {
        let name = ctx.site.config.argocd.app_name.clone();
        let Ok(api) = Self::api(ctx).await else {
            return Ok(true);
        };
        Ok(!app_synced(
            api.get_opt(&name).await.ok().flatten().as_ref(),
        ))
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        // Argo CD syncs on its own (automated sync policy): the step is the wait.
        let a = &ctx.site.config.argocd;
        let line = format!(
            "wait up to {}s for Application {}/{} to be Synced and Healthy",
            APP_DEADLINE.as_secs(),
            a.namespace,
            a.app_name
        );
        steps.run(line, Self::wait(ctx)).await?;
        Ok(())
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        anyhow::ensure!(
            !self.pending(ctx).await?,
            "Application {} is not Synced and Healthy after the wait",
            ctx.site.config.argocd.app_name
        );
        Ok(())
    }
}

impl AppsSynced {
    async fn wait(ctx: &mut Ctx) -> Result<()> {
        let name = ctx.site.config.argocd.app_name.clone();
        let ns = ctx.site.config.argocd.namespace.clone();
        let api = Self::api(ctx).await?;
        match tokio::time::timeout(
            APP_DEADLINE,
            await_condition(api.clone(), &name, app_synced),
        )
        .await
        {
            Ok(r) => {
                r.with_context(|| format!("watching Application {ns}/{name}"))?;
                Ok(())
            }
            Err(_) => {
                let apps = api.list(&ListParams::default()).await.ok();
                let stuck: Vec<String> = apps
                    .map(|l| {
                        l.items
                            .iter()
                            .filter(|a| !app_synced(Some(a)))
                            .map(app_state)
                            .collect()
                    })
                    .unwrap_or_default();
                let stuck = if stuck.is_empty() {
                    format!("Application {name} does not exist")
                } else {
                    stuck.join("\n    ")
                };
                anyhow::bail!(crate::next::hinted(format!("Argo CD did not sync Application {ns}/{name} within {}s; not Synced and Healthy:\n    {stuck}", APP_DEADLINE.as_secs()), format!("`kubectl -n {ns} get applications` and `kubectl -n {ns} describe application {name}` on the server")))
            }
        }
    }
}
