//! The end of the fresh path after the addons are applied: ESO's ClusterSecretStore Ready
//! (ESO rollout-restarted when the store stays degraded, platform-facts §4) and Argo CD's root
//! Application Synced and Healthy (§5). Both waits are watches with deadlines.

use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::Api;
use serde_json::{json, Value};

use super::Ctx;
use crate::flow::Phase;

/// How long the store gets before ESO is restarted.
const STORE_FIRST_DEADLINE: Duration = Duration::from_secs(60);
/// How long the store gets after the restart.
const STORE_DEADLINE: Duration = Duration::from_secs(300);
/// How long Argo CD gets to sync the root Application.
const APP_DEADLINE: Duration = Duration::from_secs(600);

/// The annotation `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

pub(crate) fn store_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "external-secrets.io",
        "v1",
        "ClusterSecretStore",
    ))
}

pub(crate) fn app_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "argoproj.io",
        "v1alpha1",
        "Application",
    ))
}

/// The object's `status.conditions[type=Ready]`, if any.
fn ready_condition(obj: &DynamicObject) -> Option<&Value> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// Whether a ClusterSecretStore reports Ready=True.
pub fn store_ready(obj: Option<&DynamicObject>) -> bool {
    obj.and_then(ready_condition)
        .is_some_and(|c| c["status"] == "True")
}

/// What the store last said, for messages: `Ready=False (ValidationFailed: …)`.
pub(crate) fn store_state(obj: Option<&DynamicObject>) -> String {
    match obj {
        None => "it does not exist".into(),
        Some(o) => match ready_condition(o) {
            None => "no Ready condition yet (is ESO running?)".into(),
            Some(c) => format!(
                "Ready={} ({}: {})",
                c["status"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("?"),
                c["message"].as_str().unwrap_or("")
            ),
        },
    }
}

/// Whether an Application is Synced and Healthy.
pub fn app_synced(obj: Option<&DynamicObject>) -> bool {
    obj.is_some_and(|o| {
        o.data["status"]["sync"]["status"] == "Synced"
            && o.data["status"]["health"]["status"] == "Healthy"
    })
}

/// `name: sync=…, health=… (message)` for an Application.
pub(crate) fn app_state(o: &DynamicObject) -> String {
    let s = &o.data["status"];
    let mut line = format!(
        "{}: sync={}, health={}",
        o.metadata.name.as_deref().unwrap_or("?"),
        s["sync"]["status"].as_str().unwrap_or("unknown"),
        s["health"]["status"].as_str().unwrap_or("unknown"),
    );
    let msg = s["operationState"]["message"]
        .as_str()
        .or_else(|| s["health"]["message"].as_str())
        .unwrap_or("");
    if !msg.is_empty() {
        line.push_str(&format!(" ({msg})"));
    }
    line
}

/// Every Argo CD Application's sync and health, for the restore's report.
pub async fn app_states(
    client: &kube::Client,
    ns: &str,
) -> Result<Vec<crate::restore::report::AppState>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &app_resource());
    let mut out: Vec<_> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|o| {
            let s = &o.data["status"];
            crate::restore::report::AppState {
                name: o.metadata.name.clone().unwrap_or_default(),
                sync: s["sync"]["status"]
                    .as_str()
                    .unwrap_or("Unknown")
                    .to_string(),
                health: s["health"]["status"]
                    .as_str()
                    .unwrap_or("Unknown")
                    .to_string(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// RFC 3339 UTC now, seconds precision (as Kubernetes timestamps are).
pub(crate) fn now_rfc3339() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_default()
}

/// Waits for ClusterSecretStore `k8s-secrets` to be Ready; restarts ESO when it stays degraded.
pub struct StoreReady;

impl StoreReady {
    async fn api(ctx: &mut Ctx) -> Result<Api<DynamicObject>> {
        Ok(Api::all_with(
            ctx.cluster().await?.client.clone(),
            &store_resource(),
        ))
    }

    /// Waits up to `deadline`; Ok(true) when Ready.
    async fn wait(ctx: &mut Ctx, deadline: Duration) -> Result<bool> {
        let api = Self::api(ctx).await?;
        let store = ctx.config.eso.store.clone();
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
        let ns = ctx.config.eso.namespace.clone();
        let names = ctx.config.eso.deployments.clone();
        rollout_restart(&ctx.cluster().await?.client, &ns, &names).await
    }
}

/// `kubectl rollout restart` for each named Deployment: a new pod-template annotation.
/// Refuses a paused Deployment (as kubectl does).
pub(crate) async fn rollout_restart(
    client: &kube::Client,
    ns: &str,
    names: &[String],
) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let at = now_rfc3339();
    for name in names {
        let d = api.get(name).await.with_context(|| {
            format!("reading Deployment {ns}/{name} (is External Secrets installed?)")
        })?;
        if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            anyhow::bail!(
                "Deployment {ns}/{name} is paused, so it cannot be restarted\n  next: `kubectl -n {ns} rollout resume deployment/{name}` on the server, then rerun"
            );
        }
        let patch =
            json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("restarting Deployment {ns}/{name}"))?;
    }
    Ok(())
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
        let store = ctx.config.eso.store.clone();
        let Ok(api) = Self::api(ctx).await else {
            return Ok(true);
        };
        Ok(!store_ready(
            api.get_opt(&store).await.ok().flatten().as_ref(),
        ))
    }
    fn describe(&self, ctx: &Ctx) -> Vec<String> {
        let eso = &ctx.config.eso;
        vec![
            format!(
                "wait up to {}s for ClusterSecretStore {} to be Ready",
                STORE_FIRST_DEADLINE.as_secs(),
                eso.store
            ),
            format!(
                "if it stays degraded: rollout-restart Deployments {}/{} and wait again",
                eso.namespace,
                eso.deployments.join(", ")
            ),
        ]
    }
    async fn apply(&self, ctx: &mut Ctx) -> Result<()> {
        if Self::wait(ctx, STORE_FIRST_DEADLINE).await? {
            return Ok(());
        }
        // ESO re-validates a degraded store only every few minutes: restart it.
        Self::restart_eso(ctx).await
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        if Self::wait(ctx, STORE_DEADLINE).await? {
            return Ok(());
        }
        let store = ctx.config.eso.store.clone();
        let ns = ctx.config.eso.namespace.clone();
        let seen = Self::api(ctx).await?.get_opt(&store).await.ok().flatten();
        anyhow::bail!(
            "ClusterSecretStore {store} is not Ready after {}s: {}\n  next: `kubectl describe clustersecretstore {store}` and `kubectl -n {ns} logs deployment/external-secrets` on the server",
            STORE_DEADLINE.as_secs(),
            store_state(seen.as_ref())
        )
    }
}

/// Waits for the root Application to be Synced and Healthy.
pub struct AppsSynced;

impl AppsSynced {
    async fn api(ctx: &mut Ctx) -> Result<Api<DynamicObject>> {
        let ns = ctx.config.argocd.namespace.clone();
        Ok(Api::namespaced_with(
            ctx.cluster().await?.client.clone(),
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
        let name = ctx.config.argocd.app_name.clone();
        let Ok(api) = Self::api(ctx).await else {
            return Ok(true);
        };
        Ok(!app_synced(
            api.get_opt(&name).await.ok().flatten().as_ref(),
        ))
    }
    fn describe(&self, ctx: &Ctx) -> Vec<String> {
        let a = &ctx.config.argocd;
        vec![format!(
            "wait up to {}s for Application {}/{} to be Synced and Healthy",
            APP_DEADLINE.as_secs(),
            a.namespace,
            a.app_name
        )]
    }
    async fn apply(&self, _ctx: &mut Ctx) -> Result<()> {
        // Argo CD syncs on its own (automated sync policy); the wait is the verification.
        Ok(())
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        let name = ctx.config.argocd.app_name.clone();
        let ns = ctx.config.argocd.namespace.clone();
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
                anyhow::bail!(
                    "Argo CD did not sync Application {ns}/{name} within {}s; not Synced and Healthy:\n    {stuck}\n  next: `kubectl -n {ns} get applications` and `kubectl -n {ns} describe application {name}` on the server",
                    APP_DEADLINE.as_secs()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(data: Value) -> DynamicObject {
        let mut o = DynamicObject::new("x", &app_resource());
        o.data = data;
        o
    }

    #[test]
    fn store_readiness_reads_the_ready_condition() {
        assert!(!store_ready(None));
        assert!(!store_ready(Some(&obj(json!({})))));
        let degraded = obj(json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "ValidationFailed", "message": "sealed"}
        ]}}));
        assert!(!store_ready(Some(&degraded)));
        assert_eq!(
            store_state(Some(&degraded)),
            "Ready=False (ValidationFailed: sealed)"
        );
        let ready = obj(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}));
        assert!(store_ready(Some(&ready)));
    }

    #[test]
    fn app_is_done_when_synced_and_healthy() {
        let progressing = obj(
            json!({"status": {"sync": {"status": "Synced"}, "health": {"status": "Progressing"}}}),
        );
        assert!(!app_synced(Some(&progressing)));
        assert_eq!(
            app_state(&progressing),
            "x: sync=Synced, health=Progressing"
        );
        let done =
            obj(json!({"status": {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}}));
        assert!(app_synced(Some(&done)));
    }

    #[test]
    fn restart_timestamp_is_rfc3339_utc() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z'));
    }
}
