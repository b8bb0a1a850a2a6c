//! The Job and CronJob controllers plus the part of a kubelet that runs a Job's pod: its
//! container command runs for real as a process on the lab server (sh, curl, kubectl exist
//! there; the image is ignored).
//!
//! Contract followed: Kubernetes `batch/v1` (platform-facts §6): a Job gets pods named
//! `<job>-<5 chars>` labelled `batch.kubernetes.io/job-name`/`job-name`/`controller-uid`,
//! owned by the Job; exit 0 → pod `Succeeded`, Job `succeeded: 1` with conditions
//! `SuccessCriteriaMet` + `Complete`; a failure counts in `status.failed` and a new attempt
//! starts until `failed > backoffLimit` (default 6) → `FailureTarget` + `Failed`
//! (`BackoffLimitExceeded`); `activeDeadlineSeconds` kills the pod (`DeadlineExceeded`).
//! CronJobs fire on the lab [`super::Clock`] (croner parses the schedule): the most recent
//! missed time runs once (skipped when older than `startingDeadlineSeconds`); `Forbid` skips
//! while a Job is active, `Replace` deletes it first; Jobs are named
//! `<cronjob>-<minutes since epoch>` with annotation
//! `batch.kubernetes.io/cronjob-scheduled-timestamp`; `status.active`, `lastScheduleTime`,
//! `lastSuccessfulTime` are kept and finished Jobs beyond `successfulJobsHistoryLimit` (3) /
//! `failedJobsHistoryLimit` (1) are deleted with their pods. `kubectl create job --from=cronjob`
//! Jobs are ordinary Jobs and run the same way. Jobs labelled [`super::HELM_CHART_LABEL`]
//! (helm-controller's install Jobs) are skipped: [`super::helm`] runs their pods with the
//! pod helpers here.
//!
//! How a pod runs (needs root, which lab-k3s has on the lab server and tests have here):
//! `unshare -m` gives the process a private mount namespace; inside it an overlay over `/`
//! (upper dir on a tmpfs) becomes the container's root, so creating mount points never touches
//! the node's filesystem; each volume's materialised directory (Secret and ConfigMap keys as
//! files with `defaultMode`/`items`, owned by root and the pod's `fsGroup`; emptyDir; the
//! service-account token, `ca.crt` and `namespace` at
//! `/var/run/secrets/kubernetes.io/serviceaccount` unless automounting is off) is bind-mounted
//! at its `mountPath` (read-only when asked), then `chroot` + `setpriv` run the command as the
//! pod's `runAsUser`/`runAsGroup` (+ `fsGroup`). Env: `value`, `secretKeyRef`,
//! `configMapKeyRef`, `fieldRef` (metadata.name/namespace/uid, spec.serviceAccountName,
//! spec.nodeName, status.podIP/hostIP), plus `KUBERNETES_SERVICE_HOST/PORT` (the API address
//! pods reach) and `HOSTNAME`. stdout+stderr become the pod log. The token is a real
//! service-account JWT ([`kube_api_access`], [`crate::k3s::satoken`]) that lab-k3s's API
//! accepts as a `Bearer` token for the pod's service account (no RBAC beyond TokenReview).
//! Left out: images (the node's own tools run), init containers and sidecars (only the first
//! container runs), resources/limits, seccomp/capabilities, `readOnlyRootFilesystem`,
//! `restartPolicy: OnFailure` in-place restarts (a new pod is created instead, as for
//! `Never`), `parallelism`/`completions` > 1, pod failure policies, time zones.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use serde_json::{json, Value};

use super::{ctx, owned_by, owner_ref, rtype, set_status, LabEnv, HELM_CHART_LABEL};
use crate::k3s::defaults::{now, parse_time, random_suffix};
use crate::k3s::objects;
use crate::k3s::store::Store;

const MANAGER: &str = "job-controller";

// ---------------------------------------------------------------- service-account tokens

/// The kubelet's projected `kube-api-access` volume for `pod`: `token` (a TokenRequest token
/// of the pod's ServiceAccount, bound to the pod, the kubelet's 3607 s, default audiences),
/// `ca.crt` (the cluster CA) and `namespace`; None when automounting is off (pod spec, else
/// the ServiceAccount's `automountServiceAccountToken`). Err when the ServiceAccount is gone
/// (the kubelet cannot get a token: the container does not start).
pub fn kube_api_access(
    store: &Store,
    env: &LabEnv,
    pod: &Value,
) -> anyhow::Result<Option<BTreeMap<String, Vec<u8>>>> {
    let ns = ns_of(pod);
    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let sa_obj = store.lock().get("", "serviceaccounts", &ns, &sa).cloned();
    let automount = pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| {
            sa_obj
                .as_ref()
                .and_then(|s| s["automountServiceAccountToken"].as_bool())
        })
        .unwrap_or(true);
    if !automount {
        return Ok(None);
    }
    let bound = crate::k3s::satoken::BoundPod {
        name: name_of(pod),
        uid: pod["metadata"]["uid"].as_str().unwrap_or_default().into(),
        node: pod["spec"]["nodeName"].as_str().map(String::from),
    };
    let issued = crate::k3s::satoken::issue(
        store,
        &ns,
        &sa,
        &[],
        Some(crate::k3s::satoken::KUBELET_EXPIRATION),
        Some(&bound),
    )
    .map_err(|r| {
        anyhow::anyhow!(
            "MountVolume.SetUp failed for volume \"kube-api-access\" : failed to fetch token: {}",
            r.message
        )
    })?;
    let mut data = BTreeMap::new();
    data.insert("token".to_string(), issued.token.into_bytes());
    data.insert("ca.crt".to_string(), env.ca_pem.clone().into_bytes());
    data.insert("namespace".to_string(), ns.into_bytes());
    Ok(Some(data))
}

// ---------------------------------------------------------------- Job / pod status helpers

fn cond_true(obj: &Value, t: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == t && c["status"] == "True"))
}

pub fn is_finished(job: &Value) -> bool {
    cond_true(job, "Complete") || cond_true(job, "Failed")
}

fn name_of(v: &Value) -> String {
    v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
fn ns_of(v: &Value) -> String {
    v["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Pods owned by the Job `job_uid` in `ns`.
fn pods_of(store: &Store, ns: &str, job_uid: &str) -> Vec<Value> {
    store
        .lock()
        .list("", "pods", Some(ns))
        .into_iter()
        .filter(|p| owned_by(p, job_uid))
        .collect()
}

fn pod_phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("Pending")
}

pub fn delete_pods_of(store: &Store, ns: &str, job_name: &str) {
    let rt = rtype(store, "v1", "Pod").expect("Pod served");
    let listed = store.lock().list("", "pods", Some(ns));
    for p in listed {
        if p["metadata"]["labels"]["batch.kubernetes.io/job-name"] == job_name {
            let n = name_of(&p);
            let mut inner = store.lock();
            let _ = objects::delete(&mut inner, &rt, ns, &n, &Value::Null, false);
        }
    }
}

/// The Job's running (or pending) pod, created from the template when there is none.
pub fn ensure_pod(store: &Store, job: &Value, manager: &str) -> anyhow::Result<Value> {
    let ns = ns_of(job);
    let uid = job["metadata"]["uid"].as_str().unwrap_or_default();
    if let Some(p) = pods_of(store, &ns, uid)
        .into_iter()
        .find(|p| matches!(pod_phase(p), "Pending" | "Running"))
    {
        return Ok(p);
    }
    let job_name = name_of(job);
    let tmpl = &job["spec"]["template"];
    let mut labels = tmpl["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    for (k, v) in [
        ("batch.kubernetes.io/job-name", job_name.as_str()),
        ("job-name", job_name.as_str()),
        ("batch.kubernetes.io/controller-uid", uid),
        ("controller-uid", uid),
    ] {
        labels[k] = json!(v);
    }
    let mut spec = tmpl["spec"].clone();
    spec["nodeName"] = json!(node_name(store));
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{job_name}-{}", random_suffix()), "namespace": ns,
                     "labels": labels, "annotations": tmpl["metadata"]["annotations"],
                     "ownerReferences": [owner_ref(job, true)]},
        "spec": spec,
    });
    let mut pod = pod;
    if pod["metadata"]["annotations"].is_null() {
        pod["metadata"]
            .as_object_mut()
            .expect("meta")
            .remove("annotations");
    }
    let rt = rtype(store, "v1", "Pod").expect("Pod served");
    let created = {
        let mut inner = store.lock();
        objects::create(&mut inner, &rt, &ns, pod, &mut ctx(manager)).map_err(|e| {
            anyhow::anyhow!("creating the pod of Job {ns}/{job_name}: {}", e.message)
        })?
    };
    let pname = name_of(&created);
    let status = running_status(&created);
    let pod = set_status(store, &rt, &ns, &pname, status, "kubelet").unwrap_or(created);
    // Job status: active, startTime.
    let job_rt = rtype(store, "batch/v1", "Job").expect("Job served");
    let cur = store.lock().get("batch", "jobs", &ns, &job_name).cloned();
    if let Some(cur) = cur {
        let mut st = if cur["status"].is_object() {
            cur["status"].clone()
        } else {
            json!({})
        };
        if st["startTime"].is_null() {
            st["startTime"] = json!(now());
        }
        st["active"] = json!(1);
        st["ready"] = json!(0);
        st["terminating"] = json!(0);
        st["uncountedTerminatedPods"] = json!({});
        set_status(store, &job_rt, &ns, &job_name, st, MANAGER);
    }
    Ok(pod)
}

fn node_name(store: &Store) -> String {
    store
        .lock()
        .list("", "nodes", None)
        .first()
        .map(name_of)
        .unwrap_or_else(|| "lab".into())
}

fn running_status(pod: &Value) -> Value {
    let t = now();
    let containers: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true, "started": true,
                        "restartCount": 0, "state": {"running": {"startedAt": t}}}))
        .collect();
    json!({"phase": "Running", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
           "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "startTime": t, "qosClass": "BestEffort",
           "conditions": [
               {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": t},
               {"type": "Initialized", "status": "True", "lastTransitionTime": t},
               {"type": "Ready", "status": "True", "lastTransitionTime": t},
               {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
               {"type": "PodScheduled", "status": "True", "lastTransitionTime": t}],
           "containerStatuses": containers})
}

/// Marks the pod terminated with `code` (`Succeeded` when 0).
pub fn pod_finished(store: &Store, ns: &str, pod: &str, code: i32, reason: &str) {
    let rt = rtype(store, "v1", "Pod").expect("Pod served");
    let Some(cur) = store.lock().get("", "pods", ns, pod).cloned() else {
        return;
    };
    let t = now();
    let mut st = if cur["status"].is_object() {
        cur["status"].clone()
    } else {
        running_status(&cur)
    };
    st["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
    let started = st["startTime"].clone();
    if let Some(cs) = st["containerStatuses"].as_array_mut() {
        for c in cs {
            c["ready"] = json!(false);
            c["started"] = json!(false);
            c["state"] = json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": t}});
        }
    }
    if let Some(cs) = st["conditions"].as_array_mut() {
        for c in cs {
            if c["type"] == "Ready"
                || c["type"] == "ContainersReady"
                || c["type"] == "PodReadyToStartContainers"
            {
                c["status"] = json!("False");
                c["reason"] = json!("PodCompleted");
                c["lastTransitionTime"] = json!(t);
            }
        }
    }
    set_status(store, &rt, ns, pod, st, "kubelet");
}

/// Records a finished Job (`Complete`, or `Failed` with `reason`).
pub fn job_finished(store: &Store, job: &Value, success: bool, reason: &str) {
    let ns = ns_of(job);
    let name = name_of(job);
    let rt = rtype(store, "batch/v1", "Job").expect("Job served");
    let Some(cur) = store.lock().get("batch", "jobs", &ns, &name).cloned() else {
        return;
    };
    let mut st = if cur["status"].is_object() {
        cur["status"].clone()
    } else {
        json!({})
    };
    let t = now();
    if st["startTime"].is_null() {
        st["startTime"] = json!(t);
    }
    st["active"] = json!(0);
    st["ready"] = json!(0);
    let mut conds = vec![];
    if success {
        st["succeeded"] = json!(st["succeeded"].as_i64().unwrap_or(0) + 1);
        st["completionTime"] = json!(t);
        conds.push(json!({"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": t, "lastTransitionTime": t}));
        conds.push(json!({"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": t, "lastTransitionTime": t}));
    } else {
        let msg = match reason {
            "DeadlineExceeded" => "Job was active longer than specified deadline",
            _ => "Job has reached the specified backoff limit",
        };
        conds.push(json!({"type": "FailureTarget", "status": "True", "reason": reason, "message": msg, "lastProbeTime": t, "lastTransitionTime": t}));
        conds.push(json!({"type": "Failed", "status": "True", "reason": reason, "message": msg, "lastProbeTime": t, "lastTransitionTime": t}));
    }
    st["conditions"] = json!(conds);
    set_status(store, &rt, &ns, &name, st, MANAGER);
}

/// Counts a failed attempt; the Job fails once `failed > backoffLimit`. True when it failed.
pub fn pod_failed_retry(store: &Store, job: &Value) -> bool {
    let ns = ns_of(job);
    let name = name_of(job);
    let rt = rtype(store, "batch/v1", "Job").expect("Job served");
    let Some(cur) = store.lock().get("batch", "jobs", &ns, &name).cloned() else {
        return true;
    };
    let mut st = if cur["status"].is_object() {
        cur["status"].clone()
    } else {
        json!({})
    };
    let failed = st["failed"].as_i64().unwrap_or(0) + 1;
    st["failed"] = json!(failed);
    st["active"] = json!(0);
    set_status(store, &rt, &ns, &name, st, MANAGER);
    let limit = cur["spec"]["backoffLimit"].as_i64().unwrap_or(6);
    if failed > limit {
        job_finished(store, &cur, false, "BackoffLimitExceeded");
        true
    } else {
        false
    }
}

// ---------------------------------------------------------------- the controller loop

pub async fn run(store: Arc<Store>, env: LabEnv) {
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Power loss: pods that were running when lab-k3s stopped are gone with their processes.
    let listed = store.lock().list("batch", "jobs", None);
    for job in listed {
        if !is_finished(&job) && job["metadata"]["labels"][HELM_CHART_LABEL].is_null() {
            let uid = job["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            for p in pods_of(&store, &ns_of(&job), &uid) {
                if matches!(pod_phase(&p), "Pending" | "Running") {
                    pod_finished(
                        &store,
                        &ns_of(&job),
                        &name_of(&p),
                        137,
                        "ContainerStatusUnknown",
                    );
                    pod_failed_retry(&store, &job);
                }
            }
        }
    }
    let mut rx = store.subscribe();
    loop {
        if let Err(e) = cronjobs(&store, &env) {
            eprintln!("lab-k3s cronjob-controller: {e:#}");
        }
        let listed = store.lock().list("batch", "jobs", None);
        for job in listed {
            if is_finished(&job)
                || !job["metadata"]["labels"][HELM_CHART_LABEL].is_null()
                || job["spec"]["suspend"] == true
                || !job["metadata"]["deletionTimestamp"].is_null()
            {
                continue;
            }
            let uid = job["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !running.lock().unwrap().insert(uid.clone()) {
                continue;
            }
            let (store, env, running) = (store.clone(), env.clone(), running.clone());
            tokio::spawn(async move {
                if let Err(e) = run_job(&store, &env, &job).await {
                    eprintln!(
                        "lab-k3s job-controller: {}/{}: {e:#}",
                        ns_of(&job),
                        name_of(&job)
                    );
                }
                running.lock().unwrap().remove(&uid);
            });
        }
        // CronJobs need a pass at least once per lab second.
        let tick = Duration::from_millis((1000 / env.clock.speed as u64).clamp(50, 1000));
        let interesting = |ev: &crate::k3s::store::Event| ev.group == "batch";
        if !super::next_pass(&mut rx, tick, interesting).await {
            return;
        }
    }
}

/// Runs attempts of one Job until it completes or fails.
async fn run_job(store: &Store, env: &LabEnv, job: &Value) -> anyhow::Result<()> {
    let ns = ns_of(job);
    let name = name_of(job);
    let started = std::time::Instant::now();
    loop {
        let Some(cur) = store.lock().get("batch", "jobs", &ns, &name).cloned() else {
            return Ok(());
        };
        if cur["metadata"]["uid"] != job["metadata"]["uid"] || is_finished(&cur) {
            return Ok(());
        }
        let pod = ensure_pod(store, &cur, MANAGER)?;
        let pod_name = name_of(&pod);
        let deadline = cur["spec"]["activeDeadlineSeconds"]
            .as_u64()
            .map(|s| Duration::from_secs(s).saturating_sub(started.elapsed()));
        let outcome = run_pod(store, env, &pod, deadline).await;
        match outcome {
            Ok(0) => {
                pod_finished(store, &ns, &pod_name, 0, "Completed");
                job_finished(store, &cur, true, "");
                return Ok(());
            }
            Ok(code) if code == DEADLINE => {
                pod_finished(store, &ns, &pod_name, 137, "DeadlineExceeded");
                job_finished(store, &cur, false, "DeadlineExceeded");
                return Ok(());
            }
            Ok(code) => {
                pod_finished(store, &ns, &pod_name, code, "Error");
            }
            Err(e) => {
                let _ = store.set_pod_log(
                    &ns,
                    &pod_name,
                    &format!("lab: cannot start the container: {e:#}\n"),
                );
                pod_finished(store, &ns, &pod_name, 128, "StartError");
            }
        }
        if pod_failed_retry(store, &cur) {
            return Ok(());
        }
        // Kubernetes backs off 10s, 20s, ...; the lab clock speeds this up too.
        let failed = store
            .lock()
            .get("batch", "jobs", &ns, &name)
            .map(|j| j["status"]["failed"].as_u64().unwrap_or(1))
            .unwrap_or(1);
        tokio::time::sleep(Duration::from_secs(10 << failed.min(5)) / env.clock.speed).await;
    }
}

const DEADLINE: i32 = -9999;

/// `/etc/hosts` lines for the Services: `<ip> <svc>.<ns>.svc <svc>.<ns>.svc.cluster.local`,
/// plus the bare `<svc>` for the pod's own namespace (its DNS search path).
pub(crate) fn service_hosts(store: &Store, pod_ns: &str) -> Vec<String> {
    let services = store.lock().list("", "services", None);
    let mut lines = vec![];
    for svc in services {
        let Some(ip) = svc["spec"]["clusterIP"]
            .as_str()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        let (name, ns) = (name_of(&svc), ns_of(&svc));
        let mut line = format!("{ip} {name}.{ns}.svc {name}.{ns}.svc.cluster.local");
        if ns == pod_ns {
            line.push_str(&format!(" {name}"));
        }
        lines.push(line);
    }
    lines
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

/// Writes `key → bytes` as files under `dir` following `items`/`defaultMode`.
fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: &Value,
    mode: u32,
    gid: Option<u32>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![];
    match items.as_array() {
        Some(items) => {
            for it in items {
                let key = it["key"].as_str().unwrap_or_default();
                let path = it["path"].as_str().unwrap_or(key);
                let m = it["mode"].as_u64().map(|m| m as u32).unwrap_or(mode);
                let bytes = data
                    .get(key)
                    .with_context(|| format!("couldn't find key {key} in the volume's source"))?;
                files.push((path.into(), bytes.clone(), m));
            }
        }
        None => files.extend(data.iter().map(|(k, v)| (k.clone(), v.clone(), mode))),
    }
    for (path, bytes, m) in files {
        let p = dir.join(&path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, bytes)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m))?;
        if let Some(g) = gid {
            std::os::unix::fs::chown(&p, Some(0), Some(g))?;
        }
    }
    Ok(())
}

fn secret_data(store: &Store, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let s = store.lock().get("", "secrets", ns, name).cloned()?;
    Some(
        s["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), b64(v.as_str().unwrap_or_default())))
            .collect(),
    )
}

fn configmap_data(store: &Store, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let c = store.lock().get("", "configmaps", ns, name).cloned()?;
    let mut out: BTreeMap<String, Vec<u8>> = c["data"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().unwrap_or_default().as_bytes().to_vec(),
            )
        })
        .collect();
    for (k, v) in c["binaryData"].as_object().into_iter().flatten() {
        out.insert(k.clone(), b64(v.as_str().unwrap_or_default()));
    }
    Some(out)
}

/// The container's environment (without the node's own).
fn container_env(
    store: &Store,
    env: &LabEnv,
    pod: &Value,
    c: &Value,
) -> anyhow::Result<Vec<(String, String)>> {
    let ns = ns_of(pod);
    let mut out = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOSTNAME".into(), name_of(pod)),
        ("KUBERNETES_SERVICE_HOST".into(), env.api.ip().to_string()),
        ("KUBERNETES_SERVICE_PORT".into(), env.api.port().to_string()),
        (
            "KUBERNETES_SERVICE_PORT_HTTPS".into(),
            env.api.port().to_string(),
        ),
        ("KUBERNETES_PORT".into(), format!("tcp://{}", env.api)),
    ];
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_string();
        let vf = &e["valueFrom"];
        let value = if let Some(v) = e["value"].as_str() {
            // $(VAR) references to earlier variables, as the kubelet expands them.
            let mut v = v.to_string();
            for (k, val) in &out {
                v = v.replace(&format!("$({k})"), val);
            }
            v
        } else if !vf["secretKeyRef"].is_null() {
            let r = &vf["secretKeyRef"];
            let (sn, key) = (
                r["name"].as_str().unwrap_or_default(),
                r["key"].as_str().unwrap_or_default(),
            );
            match secret_data(store, &ns, sn).and_then(|d| d.get(key).cloned()) {
                Some(b) => String::from_utf8_lossy(&b).into_owned(),
                None if r["optional"] == true => continue,
                None => anyhow::bail!(
                    "CreateContainerConfigError: secret \"{sn}\" not found or has no key \"{key}\""
                ),
            }
        } else if !vf["configMapKeyRef"].is_null() {
            let r = &vf["configMapKeyRef"];
            let (cn, key) = (
                r["name"].as_str().unwrap_or_default(),
                r["key"].as_str().unwrap_or_default(),
            );
            match configmap_data(store, &ns, cn).and_then(|d| d.get(key).cloned()) {
                Some(b) => String::from_utf8_lossy(&b).into_owned(),
                None if r["optional"] == true => continue,
                None => anyhow::bail!("CreateContainerConfigError: configmap \"{cn}\" not found or has no key \"{key}\""),
            }
        } else if let Some(path) = vf["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => name_of(pod),
                "metadata.namespace" => ns.clone(),
                "metadata.uid" => pod["metadata"]["uid"].as_str().unwrap_or_default().into(),
                "spec.serviceAccountName" => pod["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("default")
                    .into(),
                "spec.nodeName" => pod["spec"]["nodeName"].as_str().unwrap_or_default().into(),
                "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
                other => anyhow::bail!("fieldRef {other} is not supported by the lab"),
            }
        } else {
            String::new()
        };
        out.retain(|(k, _)| *k != name);
        out.push((name, value));
    }
    Ok(out)
}

/// Materialises the pod's volumes under `dir/vol/<name>`; returns (dir, mountPath, readOnly).
fn volumes(
    store: &Store,
    env: &LabEnv,
    pod: &Value,
    c: &Value,
    dir: &Path,
) -> anyhow::Result<Vec<(PathBuf, String, bool)>> {
    let ns = ns_of(pod);
    let fs_group = pod["spec"]["securityContext"]["fsGroup"]
        .as_u64()
        .map(|g| g as u32);
    let mut mounts = vec![];
    let vols = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let vname = m["name"].as_str().unwrap_or_default();
        let mp = m["mountPath"].as_str().unwrap_or_default().to_string();
        let ro = m["readOnly"] == true;
        let v = vols
            .iter()
            .find(|v| v["name"] == vname)
            .with_context(|| format!("volume {vname} is not defined in the pod"))?;
        let vdir = dir.join("vol").join(vname);
        if !v["secret"].is_null() {
            let sn = v["secret"]["secretName"].as_str().unwrap_or_default();
            let data = match secret_data(store, &ns, sn) {
                Some(d) => d,
                None if v["secret"]["optional"] == true => BTreeMap::new(),
                None => anyhow::bail!(
                    "MountVolume.SetUp failed for volume \"{vname}\" : secret \"{sn}\" not found"
                ),
            };
            let mode = v["secret"]["defaultMode"].as_u64().unwrap_or(0o644) as u32;
            write_keys(&vdir, &data, &v["secret"]["items"], mode, fs_group)?;
        } else if !v["configMap"].is_null() {
            let cn = v["configMap"]["name"].as_str().unwrap_or_default();
            let data = match configmap_data(store, &ns, cn) {
                Some(d) => d,
                None if v["configMap"]["optional"] == true => BTreeMap::new(),
                None => anyhow::bail!("MountVolume.SetUp failed for volume \"{vname}\" : configmap \"{cn}\" not found"),
            };
            let mode = v["configMap"]["defaultMode"].as_u64().unwrap_or(0o644) as u32;
            write_keys(&vdir, &data, &v["configMap"]["items"], mode, fs_group)?;
        } else if !v["emptyDir"].is_null() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(&vdir)?;
            std::fs::set_permissions(&vdir, std::fs::Permissions::from_mode(0o1777))?;
        } else {
            anyhow::bail!(
                "volume {vname}: only secret, configMap and emptyDir volumes run in the lab"
            );
        }
        let _ = env;
        let sub = m["subPath"].as_str().filter(|s| !s.is_empty());
        mounts.push((sub.map(|s| vdir.join(s)).unwrap_or(vdir), mp, ro));
    }
    // The service-account token (kube-api-access), unless automounting is off.
    if let Some(data) = kube_api_access(store, env, pod)? {
        let tdir = dir.join("vol").join("kube-api-access");
        write_keys(&tdir, &data, &Value::Null, 0o644, fs_group)?;
        mounts.push((
            tdir,
            "/var/run/secrets/kubernetes.io/serviceaccount".into(),
            true,
        ));
    }
    Ok(mounts)
}

/// Runs the pod's first container; its exit code, or [`DEADLINE`] when killed at the deadline.
async fn run_pod(
    store: &Store,
    env: &LabEnv,
    pod: &Value,
    deadline: Option<Duration>,
) -> anyhow::Result<i32> {
    let ns = ns_of(pod);
    let pod_name = name_of(pod);
    let c = pod["spec"]["containers"][0].clone();
    let mut argv: Vec<String> = c["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(c["args"].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    if c["command"].as_array().is_none_or(|a| a.is_empty()) {
        anyhow::bail!("the lab runs a container's `command` (the image {} and its entrypoint are not available)", c["image"]);
    }
    let dir = env.lab_dir("pods").join(format!("{ns}_{pod_name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("fs"))?;
    let envs = container_env(store, env, pod, &c)?;
    let mounts = volumes(store, env, pod, &c, &dir)?;
    let sc = &pod["spec"]["securityContext"];
    let csc = &c["securityContext"];
    let uid = csc["runAsUser"]
        .as_u64()
        .or(sc["runAsUser"].as_u64())
        .unwrap_or(0);
    let gid = csc["runAsGroup"]
        .as_u64()
        .or(sc["runAsGroup"].as_u64())
        .unwrap_or(0);
    let mut groups = vec![];
    if let Some(g) = sc["fsGroup"].as_u64() {
        groups.push(g.to_string());
    }
    for g in sc["supplementalGroups"].as_array().into_iter().flatten() {
        groups.push(g.to_string());
    }
    let workdir = c["workingDir"].as_str().unwrap_or("/");
    // Inside the chroot: mount points, bind mounts, then drop to the pod's user.
    let mut inner = String::from("set -e\n");
    // Cluster DNS stand-in: every Service's name resolves to its ClusterIP through the
    // container's own /etc/hosts (in the overlay, so the node's file is untouched).
    inner.push_str(&format!(
        "printf '%s\\n' {} >> /etc/hosts\n",
        service_hosts(store, &ns)
            .iter()
            .map(|l| sh_quote(l))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    for (i, (_, mp, ro)) in mounts.iter().enumerate() {
        let q = sh_quote(mp);
        inner.push_str(&format!("mkdir -p {q}\nmount --bind /.lab-pod/{i} {q}\n"));
        if *ro {
            inner.push_str(&format!("mount -o remount,bind,ro {q}\n"));
        }
    }
    let groups_arg = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!("--groups {}", groups.join(","))
    };
    inner.push_str(&format!(
        "cd {}\nexec setpriv --reuid {uid} --regid {gid} {groups_arg} -- \"$@\"\n",
        sh_quote(workdir)
    ));
    // Outside (private mount namespace): the container root, then into it.
    let mut outer = String::from("set -e\nP=\"$LAB_POD_DIR\"\nunset LAB_POD_DIR\nmount -t tmpfs lab-pod \"$P/fs\"\nmkdir \"$P/fs/upper\" \"$P/fs/work\" \"$P/fs/root\"\nR=\"$P/fs/root\"\nmount -t overlay overlay -o \"lowerdir=/,upperdir=$P/fs/upper,workdir=$P/fs/work\" \"$R\"\nfor d in proc dev sys; do mount --rbind /$d \"$R/$d\"; done\nmount -t tmpfs tmpfs \"$R/run\"\nmkdir -p \"$R/.lab-pod\"\n");
    for (i, (src, _, _)) in mounts.iter().enumerate() {
        outer.push_str(&format!(
            "mkdir -p \"$R/.lab-pod/{i}\"\nmount --bind {} \"$R/.lab-pod/{i}\"\n",
            sh_quote(&src.to_string_lossy())
        ));
    }
    outer.push_str(&format!(
        "exec chroot \"$R\" /bin/sh -c {} sh \"$@\"\n",
        sh_quote(&inner)
    ));
    let log_path = dir.join("log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = tokio::process::Command::new("setpriv");
    cmd.args([
        "--pdeathsig",
        "KILL",
        "--",
        "unshare",
        "-m",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        &outer,
        "sh",
    ]);
    cmd.args(argv.drain(..));
    cmd.env_clear().envs(envs).env("LAB_POD_DIR", &dir);
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    cmd.kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .context("starting unshare (the lab runs pods as root)")?;
    let mut last = String::new();
    let wait_deadline =
        tokio::time::sleep(deadline.unwrap_or(Duration::from_secs(u32::MAX as u64)));
    tokio::pin!(wait_deadline);
    let code = loop {
        tokio::select! {
            st = child.wait() => break st?.code().unwrap_or(137),
            _ = &mut wait_deadline => { let _ = child.kill().await; break DEADLINE; }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                if text != last {
                    store.set_pod_log(&ns, &pod_name, &text)?;
                    last = text;
                }
            }
        }
    };
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    store.set_pod_log(&ns, &pod_name, &text)?;
    Ok(code)
}

// ---------------------------------------------------------------- CronJobs

fn cronjobs(store: &Store, env: &LabEnv) -> anyhow::Result<()> {
    let cj_rt = rtype(store, "batch/v1", "CronJob").expect("CronJob served");
    let job_rt = rtype(store, "batch/v1", "Job").expect("Job served");
    let now_lab = env.clock.now();
    let listed = store.lock().list("batch", "cronjobs", None);
    for cj in listed {
        let ns = ns_of(&cj);
        let name = name_of(&cj);
        let uid = cj["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut owned: Vec<Value> = store
            .lock()
            .list("batch", "jobs", Some(&ns))
            .into_iter()
            .filter(|j| owned_by(j, &uid))
            .collect();
        owned.sort_by_key(|j| {
            j["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        });
        let mut status = if cj["status"].is_object() {
            cj["status"].clone()
        } else {
            json!({})
        };
        // History: finished Jobs beyond the limits go, with their pods.
        for (want_ok, limit) in [
            (
                true,
                cj["spec"]["successfulJobsHistoryLimit"]
                    .as_u64()
                    .unwrap_or(3),
            ),
            (
                false,
                cj["spec"]["failedJobsHistoryLimit"].as_u64().unwrap_or(1),
            ),
        ] {
            let done: Vec<&Value> = owned
                .iter()
                .filter(|j| {
                    if want_ok {
                        cond_true(j, "Complete")
                    } else {
                        cond_true(j, "Failed")
                    }
                })
                .collect();
            if done.len() as u64 > limit {
                for j in &done[..done.len() - limit as usize] {
                    super::delete(store, &job_rt, &ns, &name_of(j));
                    delete_pods_of(store, &ns, &name_of(j));
                }
            }
        }
        if let Some(last_ok) = owned
            .iter()
            .filter(|j| cond_true(j, "Complete"))
            .filter_map(|j| j["status"]["completionTime"].as_str())
            .max()
        {
            status["lastSuccessfulTime"] = json!(last_ok);
        }
        let active: Vec<&Value> = owned.iter().filter(|j| !is_finished(j)).collect();
        let active_refs: Vec<Value> = active.iter().map(|j| json!({"apiVersion": "batch/v1", "kind": "Job", "name": j["metadata"]["name"], "namespace": ns, "uid": j["metadata"]["uid"], "resourceVersion": j["metadata"]["resourceVersion"]})).collect();
        if active_refs.is_empty() {
            if let Some(m) = status.as_object_mut() {
                m.remove("active");
            }
        } else {
            status["active"] = json!(active_refs);
        }
        // Scheduling.
        if cj["spec"]["suspend"] != true {
            let sched = cj["spec"]["schedule"].as_str().unwrap_or_default();
            match croner::Cron::from_str(sched) {
                Err(e) => {
                    eprintln!("lab-k3s cronjob-controller: {ns}/{name}: schedule {sched:?}: {e}")
                }
                Ok(cron) => {
                    let base = status["lastScheduleTime"]
                        .as_str()
                        .and_then(parse_time)
                        .or(cj["metadata"]["creationTimestamp"]
                            .as_str()
                            .and_then(parse_time))
                        .unwrap_or(now_lab)
                        .min(now_lab);
                    // The most recent schedule time in (base, now].
                    let mut due = None;
                    for t in cron.iter_after(base).take(1000) {
                        if t > now_lab {
                            break;
                        }
                        due = Some(t);
                    }
                    if let Some(t) = due {
                        let late = (now_lab - t).num_seconds();
                        let too_late = cj["spec"]["startingDeadlineSeconds"]
                            .as_i64()
                            .is_some_and(|d| late > d);
                        let policy = cj["spec"]["concurrencyPolicy"].as_str().unwrap_or("Allow");
                        if too_late {
                            status["lastScheduleTime"] =
                                json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                        } else if policy == "Forbid" && !active.is_empty() {
                            // Skipped; retried on the next pass until the window passes.
                        } else {
                            if policy == "Replace" {
                                for j in &active {
                                    super::delete(store, &job_rt, &ns, &name_of(j));
                                    delete_pods_of(store, &ns, &name_of(j));
                                }
                            }
                            let jt = &cj["spec"]["jobTemplate"];
                            let mut annotations = if jt["metadata"]["annotations"].is_object() {
                                jt["metadata"]["annotations"].clone()
                            } else {
                                json!({})
                            };
                            annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"] =
                                json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                            let job = json!({"apiVersion": "batch/v1", "kind": "Job",
                                "metadata": {"name": format!("{name}-{}", t.timestamp() / 60), "namespace": ns,
                                             "labels": jt["metadata"]["labels"].as_object().cloned().unwrap_or_default(),
                                             "annotations": annotations,
                                             "ownerReferences": [owner_ref(&cj, true)]},
                                "spec": jt["spec"]});
                            let res = {
                                let mut inner = store.lock();
                                objects::create(
                                    &mut inner,
                                    &job_rt,
                                    &ns,
                                    job,
                                    &mut ctx("cronjob-controller"),
                                )
                            };
                            match res {
                                Ok(_) => {}
                                Err(e) if e.code == 409 => {}
                                Err(e) => eprintln!(
                                    "lab-k3s cronjob-controller: {ns}/{name}: creating its Job: {}",
                                    e.message
                                ),
                            }
                            status["lastScheduleTime"] =
                                json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                        }
                    }
                }
            }
        }
        if status != cj["status"] {
            set_status(store, &cj_rt, &ns, &name, status, "cronjob-controller");
        }
    }
    Ok(())
}
