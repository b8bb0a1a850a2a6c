//! Applying manifests: server-side apply with rebox as the field manager and strict field
//! validation, so a typo in a manifest is an error from the API server, not a silent drop.
//!
//! Each object's kind is resolved by asking only its own group version (kube's
//! `pinned_kind`), once per run ([`Cluster::kinds`]); never a full discovery, which kube-client
//! fails as a whole while any aggregated API is down (k3s's metrics.k8s.io answers 503 until
//! metrics-server runs: right when a rebuild starts applying). A kind not served yet (a CRD
//! applied a moment ago, a group whose backend is starting) is "not yet" until a deadline.

use std::time::Duration;

use anyhow::{Context, Result};
use kube::api::{DynamicObject, Patch, PatchParams, ValidationDirective};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::Api;
use serde_json::Value;

use super::Cluster;

pub const FIELD_MANAGER: &str = "rebox";

/// What was applied, for reports (`HelmChart kube-system/longhorn`).
pub fn describe(obj: &Value) -> String {
    let kind = obj["kind"].as_str().unwrap_or("?");
    let name = obj["metadata"]["name"].as_str().unwrap_or("?");
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

impl Cluster {
    /// Server-side applies every object in order (forcing rebox's ownership of its fields).
    pub async fn apply_all(&self, objects: &[Value]) -> Result<()> {
        for obj in objects {
            let (resource, caps) = self.served_kind(obj).await?;
            self.apply_one(obj, &resource, &caps).await?;
        }
        Ok(())
    }

    /// Whether every object exists (by kind, namespace and name). Kinds the cluster does not
    /// serve yet count as missing.
    pub async fn all_exist(&self, objects: &[Value]) -> Result<bool> {
        for obj in objects {
            let Some((resource, caps)) = self.kind_of(obj).await? else {
                return Ok(false);
            };
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let api = self.dynamic_api(obj, &resource, &caps);
            if api
                .get_opt(name)
                .await
                .with_context(|| format!("reading {}", describe(obj)))?
                .is_none()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `obj`'s kind as the cluster serves it, waiting up to [`KIND_DEADLINE`] for a kind that
    /// is not served yet.
    async fn served_kind(&self, obj: &Value) -> Result<(ApiResource, ApiCapabilities)> {
        let deadline = tokio::time::Instant::now() + KIND_DEADLINE;
        let mut told = false;
        loop {
            if let Some(found) = self.kind_of(obj).await? {
                return Ok(found);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(crate::next::hinted(
                    format!(
                        "the cluster does not serve {} after {}s",
                        describe(obj),
                        KIND_DEADLINE.as_secs()
                    ),
                    "is its CRD installed and Established? `kubectl get crd` on the server; for an aggregated API, `kubectl get apiservice`"
                ));
            }
            if !told {
                eprintln!(
                    "    waiting for the cluster to serve {} ({})",
                    obj["kind"].as_str().unwrap_or("?"),
                    obj["apiVersion"].as_str().unwrap_or("?")
                );
                told = true;
            }
            // The API server announces a new CRD's kind only in discovery, which has no watch.
            tokio::time::sleep(KIND_RETRY).await;
        }
    }

    /// `obj`'s kind from this run's cache, else one request to its group version; None while
    /// the cluster does not serve it (404, the kind not listed, or the group's backend 503).
    async fn kind_of(&self, obj: &Value) -> Result<Option<(ApiResource, ApiCapabilities)>> {
        let gvk =
            gvk_of(obj).with_context(|| format!("{} has no apiVersion or kind", describe(obj)))?;
        let key = format!("{}/{}/{}", gvk.group, gvk.version, gvk.kind);
        if let Some(found) = self
            .kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Some(found.clone()));
        }
        match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok(found) => {
                self.kinds
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, found.clone());
                Ok(Some(found))
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 503 => Ok(None),
            Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingKind(_))) => Ok(None),
            Err(e) => Err(e)
                .with_context(|| format!("asking the API server how it serves {}", describe(obj))),
        }
    }

    fn dynamic_api(
        &self,
        obj: &Value,
        resource: &ApiResource,
        caps: &ApiCapabilities,
    ) -> Api<DynamicObject> {
        match caps.scope {
            Scope::Namespaced => {
                let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
                Api::namespaced_with(self.client.clone(), ns, resource)
            }
            Scope::Cluster => Api::all_with(self.client.clone(), resource),
        }
    }

    async fn apply_one(
        &self,
        obj: &Value,
        resource: &ApiResource,
        caps: &ApiCapabilities,
    ) -> Result<()> {
        let name = obj["metadata"]["name"]
            .as_str()
            .context("an object without metadata.name")?;
        let api = self.dynamic_api(obj, resource, caps);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            force: true,
            field_validation: Some(ValidationDirective::Strict),
            dry_run: false,
        };
        // An admission webhook with failurePolicy Fail refuses every write until its pods
        // serve (ESO's and Longhorn's start minutes after their chart's install Job is done);
        // nothing announces that, so the write is tried again until the deadline.
        let deadline = tokio::time::Instant::now() + WEBHOOK_DEADLINE;
        let mut told = false;
        // Refusals that say "not now" (kube-client already retries 429, 503 and 504).
        let transient_deadline = tokio::time::Instant::now() + TRANSIENT_DEADLINE;
        let mut backoff = TRANSIENT_FIRST_RETRY;
        loop {
            match api.patch(name, &params, &Patch::Apply(obj)).await {
                Ok(_) => break,
                Err(kube::Error::Api(status))
                    if transient(&status) && tokio::time::Instant::now() < transient_deadline =>
                {
                    eprintln!(
                        "    the API server refused applying {} for now ({} {}: {}); applying it again in {:.1}s",
                        describe(obj),
                        status.code,
                        status.reason,
                        status.message,
                        backoff.as_secs_f64()
                    );
                    tokio::time::sleep(jittered(backoff)).await;
                    backoff = (backoff * 2).min(TRANSIENT_MAX_RETRY);
                }
                Err(kube::Error::Api(status))
                    if webhook_not_serving(&status) && tokio::time::Instant::now() < deadline =>
                {
                    if !told {
                        eprintln!(
                            "    waiting for the admission webhook that checks {} to serve ({})",
                            describe(obj),
                            status.message
                        );
                        told = true;
                    }
                    tracing::debug!("webhook not serving yet: {}", status.message);
                    tokio::time::sleep(WEBHOOK_RETRY).await;
                }
                Err(kube::Error::Api(status)) if webhook_not_serving(&status) => {
                    return Err(anyhow::anyhow!("{}", status.message).context(
                        crate::next::hinted(
                            format!(
                                "applying {}: its admission webhook did not serve within {}s",
                                describe(obj),
                                WEBHOOK_DEADLINE.as_secs()
                            ),
                            "`kubectl get pods -A | grep -i webhook` on the server shows which pod is not Ready, and its log why",
                        ),
                    ))
                }
                Err(e) => return Err(e).with_context(|| format!("applying {}", describe(obj))),
            }
        }
        tracing::info!("applied {}", describe(obj));
        Ok(())
    }
}

/// How long a kind may be missing from discovery (a CRD is Established within seconds of
/// its apply; a chart's CRDs come with its install Job, which rebox has waited for).
const KIND_DEADLINE: Duration = Duration::from_secs(120);
const KIND_RETRY: Duration = Duration::from_secs(1);

/// How long a write may be refused because its admission webhook does not serve yet.
const WEBHOOK_DEADLINE: Duration = Duration::from_secs(600);
const WEBHOOK_RETRY: Duration = Duration::from_secs(2);

/// How long a write may be refused with a "not now" answer ([`transient`]), and the backoff
/// between tries (doubling, with jitter so that retries do not march in step).
const TRANSIENT_DEADLINE: Duration = Duration::from_secs(120);
const TRANSIENT_FIRST_RETRY: Duration = Duration::from_millis(500);
const TRANSIENT_MAX_RETRY: Duration = Duration::from_secs(8);

/// A refusal worth applying again: 409 Conflict (the object changed under the write; a
/// server-side apply carries no resourceVersion, so the next one applies to what is there
/// now), or a 500/502 that is not a webhook's (an etcd or apiserver hiccup). 429, 503 and 504
/// are retried by kube-client's own policy before they reach here.
fn transient(status: &kube::core::Status) -> bool {
    match status.code {
        409 => true,
        500 | 502 => !webhook_not_serving(status),
        _ => false,
    }
}

/// `d` give or take a quarter.
fn jittered(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::thread_rng().gen_range(0.75..1.25))
}

/// kube-apiserver's answer when it cannot call a webhook (not running, no endpoints, a CA
/// bundle not injected yet): 500 InternalError "failed calling webhook …"
/// (k8s.io/apiserver pkg/admission/plugin/webhook/errors).
fn webhook_not_serving(status: &kube::core::Status) -> bool {
    status.code == 500 && status.message.contains("failed calling webhook")
}

fn gvk_of(obj: &Value) -> Option<kube::api::GroupVersionKind> {
    let api_version = obj["apiVersion"].as_str()?;
    let kind = obj["kind"].as_str()?;
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    Some(kube::api::GroupVersionKind::gvk(group, version, kind))
}
