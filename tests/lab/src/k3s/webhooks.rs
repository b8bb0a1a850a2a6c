//! Admission webhooks as the charts register them, with `failurePolicy: Fail`: until the
//! webhook serves, kube-apiserver refuses the write with 500 InternalError "failed calling
//! webhook …" (k8s.io/apiserver `pkg/admission/plugin/webhook/errors`, the text built in
//! `pkg/admission/plugin/webhook/validating/dispatcher.go`).
//!
//! Modelled: external-secrets v2.9.0 (`deploy/charts/external-secrets/templates/
//! validatingwebhook.yaml`): `validate.secretstore.external-secrets.io` and
//! `validate.clustersecretstore.external-secrets.io` call the Service
//! `external-secrets-webhook` for CREATE and UPDATE of (Cluster)SecretStores. The write is
//! refused while that Service's Deployment is not Available ("connection refused"), then
//! while the cert-controller has not injected the CA bundle yet (`x509: certificate signed by
//! unknown authority`): [`ca_injection_delay`] after the cert-controller Deployment became
//! Available. With no webhook Service there is no webhook configuration (the chart is not
//! installed) and nothing is called.
//! Left out: what the webhook itself validates, Longhorn's admission webhook.

use std::time::Duration;

use serde_json::Value;

use super::defaults::parse_time;
use super::registry::ResourceType;
use super::status::{ApiError, ApiResult};
use super::store::Inner;

const WEBHOOK_SERVICE: &str = "external-secrets-webhook";
const CERT_CONTROLLER: &str = "external-secrets-cert-controller";

/// Time from the cert-controller being Available to the CA bundle being in the webhook
/// configuration: 5 s, 30 s under `LAB_PACE=realistic` (its first reconcile after start).
pub fn ca_injection_delay() -> Duration {
    if std::env::var("LAB_PACE").as_deref() == Ok("realistic") {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(5)
    }
}

/// Calls the webhooks registered for this write, as kube-apiserver would.
pub fn check(inner: &Inner, rt: &ResourceType) -> ApiResult<()> {
    let webhook = match (rt.group.as_str(), rt.plural.as_str()) {
        ("external-secrets.io", "clustersecretstores") => "clustersecretstore",
        ("external-secrets.io", "secretstores") => "secretstore",
        _ => return Ok(()),
    };
    let Some(svc) = inner
        .list("", "services", None)
        .into_iter()
        .find(|s| s["metadata"]["name"] == WEBHOOK_SERVICE)
    else {
        return Ok(());
    };
    let ns = svc["metadata"]["namespace"].as_str().unwrap_or_default();
    let ip = svc["spec"]["clusterIP"].as_str().unwrap_or_default();
    let url = format!(
        "https://{WEBHOOK_SERVICE}.{ns}.svc:443/validate-external-secrets-io-v1-{webhook}?timeout=5s"
    );
    let failed = |why: String| {
        Err(ApiError::new(
            500,
            "InternalError",
            format!(
                "Internal error occurred: failed calling webhook \"validate.{webhook}.external-secrets.io\": failed to call webhook: Post \"{url}\": {why}"
            ),
        ))
    };
    if available_since(inner, ns, WEBHOOK_SERVICE).is_none() {
        return failed(format!("dial tcp {ip}:443: connect: connection refused"));
    }
    let injected = available_since(inner, ns, CERT_CONTROLLER).is_some_and(|since| {
        let delay = chrono::Duration::from_std(ca_injection_delay()).unwrap_or_default();
        chrono::Utc::now() >= since + delay
    });
    if !injected {
        return failed(
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                .into(),
        );
    }
    Ok(())
}

/// When Deployment `ns/name` became Available, if it is.
fn available_since(inner: &Inner, ns: &str, name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let d: &Value = inner.get("apps", "deployments", ns, name)?;
    let c = d["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Available" && c["status"] == "True")?;
    c["lastTransitionTime"].as_str().and_then(parse_time)
}
