//! The objects whose state tells how far the recovery is, and when each counts as ready:
//! ESO's ClusterSecretStore (Ready condition, platform-facts §4), Argo CD's Applications
//! (Synced and Healthy, §5), ExternalSecrets and Longhorn Volumes; and `kubectl rollout
//! restart`, the documented fix for a degraded store.

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::Api;
use serde_json::{json, Value};

/// The annotation `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

pub fn store_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "external-secrets.io",
        "v1",
        "ClusterSecretStore",
    ))
}

pub fn longhorn_volume_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("longhorn.io", "v1beta2", "Volume"))
}

pub fn external_secret_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "external-secrets.io",
        "v1",
        "ExternalSecret",
    ))
}

pub fn app_resource() -> ApiResource {
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
pub fn store_state(obj: Option<&DynamicObject>) -> String {
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
pub fn app_state(o: &DynamicObject) -> String {
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

/// `kubectl rollout restart` for each named Deployment: a new pod-template annotation.
/// Refuses a paused Deployment (as kubectl does).
pub async fn rollout_restart(client: &kube::Client, ns: &str, names: &[String]) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let at = now_rfc3339();
    for name in names {
        let d = api.get(name).await.with_context(|| {
            format!("reading Deployment {ns}/{name} (is External Secrets installed?)")
        })?;
        if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            anyhow::bail!(crate::next::hinted(
                format!("Deployment {ns}/{name} is paused, so it cannot be restarted"),
                format!(
                    "`kubectl -n {ns} rollout resume deployment/{name}` on the server, then rerun"
                )
            ));
        }
        let patch =
            json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("restarting Deployment {ns}/{name}"))?;
    }
    Ok(())
}

/// RFC 3339 UTC now, seconds precision (as Kubernetes timestamps are).
fn now_rfc3339() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_default()
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
