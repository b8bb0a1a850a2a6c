//! k3s's built-in helm-controller, as clients observe it.
//!
//! Contract followed (platform-facts §3 "HelmChart", k3s-io/helm-controller v0.17.7
//! `pkg/controllers/chart/chart.go`): for each HelmChart the controller creates the
//! ServiceAccount `helm-<name>` and the `batch/v1` Job `helm-install-<name>` in the chart's
//! namespace (label `helmcharts.helm.cattle.io/chart=<name>`, `restartPolicy: OnFailure`,
//! `backoffLimit` from `spec.backOffLimit`, default 1000), sets `status.jobName` and the
//! `JobCreated` condition; the Job's pod runs the install and the Job completes. A spec change
//! (hash of spec + HelmChartConfig values, kept in the Job annotation
//! `helmcharts.helm.cattle.io/configHash`) replaces the Job. The install targets
//! `spec.targetNamespace` (default `default`); a missing namespace without `createNamespace`
//! fails the pod like `helm install` does (`namespaces "x" not found`), and the Job retries.
//!
//! The "helm install" itself is the lab's: the chart's objects come from [`chart_objects`],
//! a small per-chart table (longhorn, vault, external-secrets, argo-cd; any other chart
//! installs nothing but still completes), values read from `valuesContent` where they change
//! what the lab shows (Vault's `server.volumes`/`volumeMounts`, its service port; Longhorn's
//! `persistence.defaultClass`). This controller runs the install Job's pod itself (the jobs
//! controller skips Jobs labelled `helmcharts.helm.cattle.io/chart`), writing the pod log.
//! Left out: real chart rendering and values merging, uninstall Jobs (`helm-delete-<name>`)
//! and HelmChart finalizers, `failurePolicy` (an install never fails mid-way here),
//! `bootstrap` charts, suspended-then-resumed Jobs.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{apply, jobs, rtype, set_status, LabEnv, HELM_CHART_LABEL};
use crate::k3s::store::Store;

const MANAGER: &str = "helm-controller";
const HASH_ANNOTATION: &str = "helmcharts.helm.cattle.io/configHash";

pub async fn run(store: Arc<Store>, _env: LabEnv) {
    let mut rx = store.subscribe();
    loop {
        let listed = store.lock().list("helm.cattle.io", "helmcharts", None);
        for chart in listed {
            if let Err(e) = reconcile(&store, &chart) {
                eprintln!(
                    "lab-k3s helm-controller: {}/{}: {e:#}",
                    chart["metadata"]["namespace"].as_str().unwrap_or_default(),
                    chart["metadata"]["name"].as_str().unwrap_or_default()
                );
            }
        }
        let interesting = |ev: &crate::k3s::store::Event| {
            ev.group == "helm.cattle.io" || (ev.plural == "namespaces" && ev.kind == "ADDED")
        };
        if !super::next_pass(&mut rx, Duration::from_secs(2), interesting).await {
            return;
        }
    }
}

fn config_hash(chart: &Value, config: Option<&Value>) -> String {
    let mut h = Sha256::new();
    h.update(chart["spec"].to_string());
    if let Some(c) = config {
        h.update(c["spec"].to_string());
    }
    format!("SHA256={}", hex::encode(h.finalize()).to_uppercase())
}

fn reconcile(store: &Store, chart: &Value) -> anyhow::Result<()> {
    if !chart["metadata"]["deletionTimestamp"].is_null() {
        return Ok(());
    }
    let ns = chart["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = chart["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let config = store
        .lock()
        .get("helm.cattle.io", "helmchartconfigs", &ns, &name)
        .cloned();
    let hash = config_hash(chart, config.as_ref());
    let job_name = format!("helm-install-{name}");
    let job_rt = rtype(store, "batch/v1", "Job").expect("Job served");
    let existing = store.lock().get("batch", "jobs", &ns, &job_name).cloned();
    let job = match existing {
        Some(j) if j["metadata"]["annotations"][HASH_ANNOTATION] == hash.as_str() => j,
        other => {
            if other.is_some() {
                super::delete(store, &job_rt, &ns, &job_name);
                jobs::delete_pods_of(store, &ns, &job_name);
            }
            apply(
                store,
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": format!("helm-{name}"), "namespace": ns}}),
                MANAGER,
            )?;
            let job = install_job(chart, &job_name, &hash);
            let job = apply(store, job, MANAGER)?;
            let mut status = chart["status"].clone();
            if !status.is_object() {
                status = json!({});
            }
            status["jobName"] = json!(job_name);
            status["conditions"] = json!([{"type": "JobCreated", "status": "True",
                "reason": "Job created", "message": format!("Applying HelmChart using Job {ns}/{job_name}")}]);
            let chart_rt =
                rtype(store, "helm.cattle.io/v1", "HelmChart").expect("HelmChart served");
            set_status(store, &chart_rt, &ns, &name, status, MANAGER);
            job
        }
    };
    if jobs::is_finished(&job) {
        return Ok(());
    }
    // The install pod: run "helm install" (the chart table) and finish the Job.
    let pod = jobs::ensure_pod(store, &job, MANAGER)?;
    let pod_name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match install(store, chart) {
        Ok(summary) => {
            store.set_pod_log(&ns, &pod_name, &summary)?;
            jobs::pod_finished(store, &ns, &pod_name, 0, "Completed");
            jobs::job_finished(store, &job, true, "");
        }
        Err(e) => {
            store.set_pod_log(
                &ns,
                &pod_name,
                &format!("Error: INSTALLATION FAILED: {e:#}\n"),
            )?;
            jobs::pod_finished(store, &ns, &pod_name, 1, "Error");
            jobs::pod_failed_retry(store, &job);
        }
    }
    Ok(())
}

fn install_job(chart: &Value, job_name: &str, hash: &str) -> Value {
    let ns = &chart["metadata"]["namespace"];
    let name = chart["metadata"]["name"].as_str().unwrap_or_default();
    let spec = &chart["spec"];
    let target = spec["targetNamespace"].as_str().unwrap_or("default");
    let env = |k: &str, v: &Value| json!({"name": k, "value": v.as_str().map(String::from).unwrap_or_else(|| if v.is_null() { String::new() } else { v.to_string() })});
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": job_name, "namespace": ns,
            "labels": {HELM_CHART_LABEL: name},
            "annotations": {HASH_ANNOTATION: hash},
            "ownerReferences": [super::owner_ref(chart, true)],
        },
        "spec": {
            "backoffLimit": spec["backOffLimit"].as_i64().unwrap_or(1000),
            "template": {
                "metadata": {"labels": {HELM_CHART_LABEL: name}, "annotations": {HASH_ANNOTATION: hash}},
                "spec": {
                    "serviceAccountName": format!("helm-{name}"),
                    "restartPolicy": "OnFailure",
                    "containers": [{
                        "name": "helm",
                        "image": spec["jobImage"].as_str().unwrap_or("rancher/klipper-helm:v0.9.8-build20250709"),
                        "args": ["install"],
                        "env": [
                            env("NAME", &json!(name)),
                            env("VERSION", &spec["version"]),
                            env("REPO", &spec["repo"]),
                            env("HELM_DRIVER", &json!(spec["driver"].as_str().unwrap_or("secret"))),
                            env("CHART_NAMESPACE", &json!(target)),
                            env("CHART", &spec["chart"]),
                            env("HELM_VERSION", &json!("")),
                            env("TARGET_NAMESPACE", &json!(target)),
                            env("CREATE_NAMESPACE", &json!(spec["createNamespace"].as_bool().unwrap_or(false).to_string())),
                            env("FAILURE_POLICY", &json!(spec["failurePolicy"].as_str().unwrap_or("reinstall"))),
                        ],
                    }],
                },
            },
        },
    })
}

/// The chart's short name: `spec.chart` without repo prefix, path or `.tgz` version suffix.
fn chart_name(chart: &Value) -> String {
    let raw = chart["spec"]["chart"]
        .as_str()
        .or(chart["metadata"]["name"].as_str())
        .unwrap_or_default();
    let base = raw.rsplit('/').next().unwrap_or(raw);
    let base = base.strip_suffix(".tgz").unwrap_or(base);
    for known in ["longhorn", "vault", "external-secrets", "argo-cd"] {
        if base == known || base.starts_with(&format!("{known}-")) {
            return known.into();
        }
    }
    base.into()
}

/// "helm install": creates the chart's objects in the target namespace; the log text.
fn install(store: &Store, chart: &Value) -> anyhow::Result<String> {
    let spec = &chart["spec"];
    let release = chart["metadata"]["name"].as_str().unwrap_or_default();
    let target = spec["targetNamespace"].as_str().unwrap_or("default");
    let ns_exists = store.lock().get("", "namespaces", "", target).is_some();
    if !ns_exists {
        if spec["createNamespace"].as_bool() == Some(true) {
            apply(
                store,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target}}),
                MANAGER,
            )?;
        } else {
            anyhow::bail!("create: failed to create: namespaces \"{target}\" not found");
        }
    }
    let values: Value = spec["valuesContent"]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .map(serde_saphyr::from_str::<Value>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("parsing valuesContent: {e}"))?
        .unwrap_or(Value::Null);
    let name = chart_name(chart);
    let (crds, objects) = chart_objects(&name, release, target, &values);
    super::register_crds(store, &crds)?;
    let mut lines = vec![format!(
        "Installing helm chart {} into namespace {target}",
        spec["chart"].as_str().unwrap_or(&name)
    )];
    for mut o in objects {
        let labels = o["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut labels = Value::Object(labels);
        labels["app.kubernetes.io/managed-by"] = json!("Helm");
        o["metadata"]["labels"] = labels;
        o["metadata"]["annotations"]["meta.helm.sh/release-name"] = json!(release);
        o["metadata"]["annotations"]["meta.helm.sh/release-namespace"] = json!(target);
        let kind = o["kind"].as_str().unwrap_or_default().to_string();
        let oname = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        apply(store, o, "helm")?;
        lines.push(format!("{kind}/{oname} created"));
    }
    lines.push(format!(
        "NAME: {release}\nNAMESPACE: {target}\nSTATUS: deployed\nREVISION: 1"
    ));
    Ok(lines.join("\n") + "\n")
}

fn labels(app: &str, release: &str, component: &str) -> Value {
    json!({"app.kubernetes.io/name": app, "app.kubernetes.io/instance": release, "app.kubernetes.io/component": component})
}

fn container(name: &str, image: &str) -> Value {
    json!({"name": name, "image": image, "imagePullPolicy": "IfNotPresent"})
}

fn deployment(ns: &str, name: &str, sel: Value, c: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": ns, "labels": sel.clone()},
           "spec": {"replicas": 1, "selector": {"matchLabels": sel.clone()},
                    "template": {"metadata": {"labels": sel}, "spec": {"containers": [c]}}}})
}

fn daemonset(ns: &str, name: &str, sel: Value, c: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
           "metadata": {"name": name, "namespace": ns, "labels": sel.clone()},
           "spec": {"selector": {"matchLabels": sel.clone()},
                    "template": {"metadata": {"labels": sel}, "spec": {"containers": [c]}}}})
}

/// `w` (a Deployment, DaemonSet or StatefulSet) runs its pods as ServiceAccount `sa`, as the
/// charts do; a pod whose ServiceAccount is missing is refused at admission.
fn run_as(mut w: Value, sa: &str) -> Value {
    w["spec"]["template"]["spec"]["serviceAccountName"] = json!(sa);
    w
}

fn service_account(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}})
}

fn service(ns: &str, name: &str, sel: Value, port: i64) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
           "spec": {"selector": sel, "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]}})
}

/// The per-chart table: (CRDs, objects) a chart installs, for the values that matter here.
pub fn chart_objects(
    chart: &str,
    release: &str,
    ns: &str,
    values: &Value,
) -> (Vec<Value>, Vec<Value>) {
    match chart {
        "longhorn" => {
            let mgr = json!({"app": "longhorn-manager"});
            let deployer = json!({"app": "longhorn-driver-deployer"});
            let ui = json!({"app": "longhorn-ui"});
            let default_class = values["persistence"]["defaultClass"]
                .as_bool()
                .unwrap_or(true);
            let replicas = values["persistence"]["defaultClassReplicaCount"]
                .as_i64()
                .unwrap_or(3);
            let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "longhorn", "annotations": {"storageclass.kubernetes.io/is-default-class": default_class.to_string()}},
                "provisioner": "driver.longhorn.io", "allowVolumeExpansion": true, "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
                "parameters": {"numberOfReplicas": replicas.to_string(), "staleReplicaTimeout": "30", "fromBackup": "", "fsType": "ext4", "dataLocality": "disabled"}});
            // templates/default-resource.yaml (chart 1.8+): `defaultBackupStore` values become
            // the ConfigMap the manager reads into BackupTarget `default`.
            let store = &values["defaultBackupStore"];
            let text_of = |v: &Value| match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            let default_resource = format!(
                "\"backup-target\": {}\n\"backup-target-credential-secret\": {}\n\"backupstore-poll-interval\": {}\n",
                Value::String(text_of(&store["backupTarget"])),
                Value::String(text_of(&store["backupTargetCredentialSecret"])),
                Value::String(text_of(&store["pollInterval"])),
            );
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "longhorn-default-resource", "namespace": ns},
                "data": {"default-resource.yaml": default_resource}});
            (
                super::longhorn::longhorn_crds(),
                vec![
                    cm,
                    // templates/serviceaccount.yaml makes longhorn-service-account, which the
                    // manager and the driver deployer run as; deployment-ui.yaml names none
                    // (outside OpenShift), so the UI runs as the namespace's `default`.
                    service_account(ns, "longhorn-service-account"),
                    run_as(
                        daemonset(
                            ns,
                            "longhorn-manager",
                            mgr,
                            container("longhorn-manager", "longhornio/longhorn-manager:v1.11.3"),
                        ),
                        "longhorn-service-account",
                    ),
                    run_as(
                        deployment(
                            ns,
                            "longhorn-driver-deployer",
                            deployer,
                            container(
                                "longhorn-driver-deployer",
                                "longhornio/longhorn-manager:v1.11.3",
                            ),
                        ),
                        "longhorn-service-account",
                    ),
                    deployment(
                        ns,
                        "longhorn-ui",
                        ui.clone(),
                        container("longhorn-ui", "longhornio/longhorn-ui:v1.11.3"),
                    ),
                    service(ns, "longhorn-frontend", ui, 80),
                    sc,
                ],
            )
        }
        "vault" => {
            let server = &values["server"];
            let port = server["service"]["port"].as_i64().unwrap_or(8200);
            let sel = json!({"app.kubernetes.io/name": "vault", "app.kubernetes.io/instance": release, "component": "server"});
            let mut c = container("vault", "hashicorp/vault:1.21.1");
            c["ports"] = json!([{"containerPort": 8200, "name": "http"}, {"containerPort": 8201, "name": "https-internal"}]);
            c["readinessProbe"] = json!({"exec": {"command": ["/bin/sh", "-ec", "vault status -tls-skip-verify"]},
                "failureThreshold": 2, "initialDelaySeconds": 5, "periodSeconds": 5, "successThreshold": 1, "timeoutSeconds": 3});
            c["env"] = json!([{"name": "VAULT_ADDR", "value": "http://127.0.0.1:8200"}]);
            if let Some(m) = server["volumeMounts"].as_array() {
                c["volumeMounts"] = json!(m);
            }
            let mut pod_spec = json!({"serviceAccountName": release, "containers": [c]});
            if let Some(v) = server["volumes"].as_array() {
                pod_spec["volumes"] = json!(v);
            }
            let mut sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": release, "namespace": ns, "labels": {"app.kubernetes.io/name": "vault", "app.kubernetes.io/instance": release}},
                "spec": {"serviceName": format!("{release}-internal"), "podManagementPolicy": "Parallel", "replicas": 1,
                         "updateStrategy": {"type": "OnDelete"}, "selector": {"matchLabels": sel.clone()},
                         "template": {"metadata": {"labels": sel.clone()}, "spec": pod_spec}}});
            if server["dataStorage"]["enabled"].as_bool().unwrap_or(true) {
                sts["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}]);
            }
            let mut svc = service(ns, release, sel.clone(), port);
            svc["spec"]["publishNotReadyAddresses"] = json!(true);
            svc["spec"]["ports"] = json!([{"name": "http", "port": port, "targetPort": 8200, "protocol": "TCP"},
                                          {"name": "https-internal", "port": 8201, "targetPort": 8201, "protocol": "TCP"}]);
            let mut internal = service(ns, &format!("{release}-internal"), sel, port);
            internal["spec"]["clusterIP"] = json!("None");
            internal["spec"]["publishNotReadyAddresses"] = json!(true);
            let sa = service_account(ns, release);
            let mut objs = vec![sa, svc, internal, sts];
            // templates/server-clusterrolebinding.yaml (vault-helm v0.34.1): with
            // `server.authDelegator.enabled` (default true) the server's ServiceAccount is
            // bound to `system:auth-delegator`, so Vault's Kubernetes auth may create
            // TokenReviews with the pod's own token.
            if server["authDelegator"]["enabled"].as_bool().unwrap_or(true) {
                objs.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": format!("{release}-server-binding"),
                                 "labels": {"app.kubernetes.io/name": "vault", "app.kubernetes.io/instance": release}},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
                    "subjects": [{"kind": "ServiceAccount", "name": release, "namespace": ns}]}));
            }
            (vec![], objs)
        }
        "external-secrets" => {
            let crds = if values["installCRDs"].as_bool().unwrap_or(true) {
                super::crds::eso()
            } else {
                vec![]
            };
            let mut objs = vec![];
            for (name, component) in [
                ("external-secrets", "controller"),
                ("external-secrets-webhook", "webhook"),
                ("external-secrets-cert-controller", "cert-controller"),
            ] {
                let sel =
                    json!({"app.kubernetes.io/name": name, "app.kubernetes.io/instance": release});
                let mut d = deployment(
                    ns,
                    name,
                    sel,
                    container(
                        component,
                        "ghcr.io/external-secrets/external-secrets:v2.9.0",
                    ),
                );
                d["metadata"]["labels"] = labels(name, release, component);
                // Each component runs as its own ServiceAccount of the same name (the
                // chart's templates/serviceaccount.yaml, webhook-serviceaccount.yaml,
                // cert-controller-serviceaccount.yaml, named from its fullname helpers).
                objs.push(service_account(ns, name));
                objs.push(run_as(d, name));
            }
            objs.push(service(ns, "external-secrets-webhook", json!({"app.kubernetes.io/name": "external-secrets-webhook", "app.kubernetes.io/instance": release}), 443));
            (crds, objs)
        }
        "argo-cd" => {
            let crds = if values["crds"]["install"].as_bool().unwrap_or(true) {
                super::crds::argocd()
            } else {
                vec![]
            };
            let mut objs = vec![];
            for name in [
                "argocd-server",
                "argocd-repo-server",
                "argocd-redis",
                "argocd-applicationset-controller",
                "argocd-dex-server",
                "argocd-notifications-controller",
            ] {
                let sel =
                    json!({"app.kubernetes.io/name": name, "app.kubernetes.io/instance": release});
                objs.push(deployment(
                    ns,
                    name,
                    sel,
                    container(
                        name.trim_start_matches("argocd-"),
                        "quay.io/argoproj/argocd:v3.5.1",
                    ),
                ));
            }
            let sel = json!({"app.kubernetes.io/name": "argocd-application-controller", "app.kubernetes.io/instance": release});
            objs.push(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "argocd-application-controller", "namespace": ns, "labels": sel.clone()},
                "spec": {"serviceName": "argocd-application-controller", "replicas": 1, "updateStrategy": {"type": "RollingUpdate"},
                         "selector": {"matchLabels": sel.clone()},
                         "template": {"metadata": {"labels": sel}, "spec": {"containers": [container("application-controller", "quay.io/argoproj/argocd:v3.5.1")]}}}}));
            objs.push(service(ns, "argocd-server", json!({"app.kubernetes.io/name": "argocd-server", "app.kubernetes.io/instance": release}), 80));
            objs.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-cm", "namespace": ns}, "data": {}}));
            objs.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "argocd-secret", "namespace": ns}, "type": "Opaque", "data": {}}));
            (crds, objs)
        }
        _ => (vec![], vec![]),
    }
}
