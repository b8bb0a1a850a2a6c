//! The workload controllers (Deployment, StatefulSet, DaemonSet) and the kubelet's view of
//! their pods, plus Vault's pod `vault-0` backed by a real `lab-vault` process.
//!
//! Contract followed: what `kubectl get pods` / `kubectl rollout status` observe
//! (platform-facts §6 "Rollout status"): pods named `<deploy>-<template hash>-<5 chars>`
//! (label `pod-template-hash`), `<sts>-<ordinal>` (label `controller-revision-hash` =
//! `<sts>-<hash>`, `statefulset.kubernetes.io/pod-name`), `<ds>-<5 chars>` (one node); owned by
//! their workload; a template change (`kubectl rollout restart` sets an annotation) replaces
//! the pods (Deployments, DaemonSets and RollingUpdate StatefulSets; `OnDelete` StatefulSets
//! keep their pods until deleted, like vault-helm's); status carries `observedGeneration`,
//! `replicas`, `updatedReplicas`, `readyReplicas`, `availableReplicas` and the `Available` /
//! `Progressing` conditions (Deployments), `currentRevision`/`updateRevision`
//! (StatefulSets), `desiredNumberScheduled`/`numberReady`/`updatedNumberScheduled`/
//! `numberAvailable` (DaemonSets).
//!
//! Vault (pods of a template labelled `app.kubernetes.io/name: vault`): a pod that mounts a
//! PVC stays `Pending` (PodScheduled False, `unbound immediate PersistentVolumeClaims`) until
//! the claim's `spec.volumeName` names a PV; the PV's `spec.csi.volumeHandle` is the Longhorn
//! volume, whose directory ([`volume_data_dir`], the contract with the Longhorn controller) is
//! lab-vault's `--data-dir`. lab-vault listens on the address of the Service of the same name
//! as the StatefulSet, port 8200: its ClusterIP when [`LabEnv::node`] (the ClusterIP is added
//! as a /32 on `lo`, as kube-proxy makes Services reachable from the node), else a free
//! 127.0.0.1 port recorded in the Service annotation [`NODE_ADDRESS_ANNOTATION`] (tests on the
//! host). The pod is `Running`; `Ready` only while lab-vault's `/v1/sys/seal-status` says
//! unsealed (polled every 200 ms), the readiness probe `vault status` of vault-helm. On a
//! lab-k3s restart (power loss) every process is started afresh: Vault comes back sealed.
//! Left out: ReplicaSets (no `kubectl rollout history`/`undo`), maxSurge/maxUnavailable
//! pacing (old pods go at once), scaling subresources, probes other than Vault's, pod
//! deletion grace, garbage collection of other owners' children.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{condition, ctx, owned_by, owner_ref, rtype, set_status, LabEnv};
use crate::k3s::defaults::{now, random_suffix};
use crate::k3s::objects;
use crate::k3s::store::Store;

/// Where a Service is reachable from the node when the lab cannot add its ClusterIP (host tests).
pub const NODE_ADDRESS_ANNOTATION: &str = "lab.rebox.dev/node-address";

/// `<lab-k3s data dir>/longhorn/volumes/<volume>/data` (the contract with the Longhorn controller).
pub use super::longhorn::volume_data_dir;

struct VaultProc {
    child: tokio::process::Child,
    addr: SocketAddr,
    data_dir: PathBuf,
}

#[derive(Default)]
struct State {
    vaults: HashMap<String, VaultProc>,
    /// pod key → unsealed, from the last poll.
    unsealed: HashMap<String, bool>,
}

pub async fn run(store: Arc<Store>, env: LabEnv) {
    let mut state = State::default();
    let mut rx = store.subscribe();
    let http = HttpPoller;
    loop {
        for (plural, kind) in [
            ("deployments", "Deployment"),
            ("statefulsets", "StatefulSet"),
            ("daemonsets", "DaemonSet"),
        ] {
            let listed = store.lock().list("apps", plural, None);
            for w in listed {
                if let Err(e) = reconcile(&store, &env, &mut state, &http, kind, &w).await {
                    eprintln!(
                        "lab-k3s {kind} controller: {}/{}: {e:#}",
                        w["metadata"]["namespace"].as_str().unwrap_or_default(),
                        w["metadata"]["name"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        // Vault processes whose pod is gone.
        let gone: Vec<String> = state
            .vaults
            .keys()
            .filter(|k| {
                let (ns, name) = k.split_once('/').unwrap_or_default();
                store.lock().get("", "pods", ns, name).is_none()
            })
            .cloned()
            .collect();
        for k in gone {
            if let Some(mut p) = state.vaults.remove(&k) {
                let _ = p.child.start_kill();
            }
        }
        let tick = if state.vaults.is_empty() {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(200)
        };
        let interesting = |ev: &crate::k3s::store::Event| {
            ev.group == "apps"
                || (ev.group.is_empty()
                    && matches!(
                        ev.plural.as_str(),
                        "pods" | "persistentvolumeclaims" | "persistentvolumes" | "services"
                    ))
        };
        if !super::next_pass(&mut rx, tick, interesting).await {
            return;
        }
    }
}

fn template_hash(w: &Value) -> String {
    let h = Sha256::digest(w["spec"]["template"].to_string().as_bytes());
    hex::encode(h)[..10].to_string()
}

async fn reconcile(
    store: &Store,
    env: &LabEnv,
    state: &mut State,
    http: &HttpPoller,
    kind: &str,
    w: &Value,
) -> anyhow::Result<()> {
    let ns = w["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = w["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let uid = w["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !w["metadata"]["deletionTimestamp"].is_null() {
        return Ok(());
    }
    let hash = template_hash(w);
    let replicas = match kind {
        "DaemonSet" => 1,
        _ => w["spec"]["replicas"].as_i64().unwrap_or(1),
    };
    let pod_rt = rtype(store, "v1", "Pod").expect("Pod served");
    let pods: Vec<Value> = store
        .lock()
        .list("", "pods", Some(&ns))
        .into_iter()
        .filter(|p| owned_by(p, &uid))
        .collect();
    let revision = format!("{name}-{hash}");
    let is_current = |p: &Value| match kind {
        "StatefulSet" => p["metadata"]["labels"]["controller-revision-hash"] == revision.as_str(),
        "DaemonSet" => p["metadata"]["labels"]["controller-revision-hash"] == hash.as_str(),
        _ => p["metadata"]["labels"]["pod-template-hash"] == hash.as_str(),
    };
    let on_delete = kind == "StatefulSet" && w["spec"]["updateStrategy"]["type"] == "OnDelete";
    // Old pods go (not for OnDelete StatefulSets); surplus pods go.
    let mut kept = vec![];
    for p in pods {
        let pname = p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let surplus = kind == "StatefulSet"
            && pname
                .rsplit('-')
                .next()
                .and_then(|o| o.parse::<i64>().ok())
                .is_none_or(|o| o >= replicas);
        if surplus || (!on_delete && !is_current(&p)) {
            let mut inner = store.lock();
            let _ = objects::delete(&mut inner, &pod_rt, &ns, &pname, &Value::Null, false);
        } else {
            kept.push(p);
        }
    }
    if kind != "StatefulSet" && kept.len() as i64 > replicas {
        for p in kept.split_off(replicas.max(0) as usize) {
            let mut inner = store.lock();
            let _ = objects::delete(
                &mut inner,
                &pod_rt,
                &ns,
                p["metadata"]["name"].as_str().unwrap_or_default(),
                &Value::Null,
                false,
            );
        }
    }
    // Missing pods.
    let missing: Vec<String> = match kind {
        "StatefulSet" => (0..replicas)
            .map(|i| format!("{name}-{i}"))
            .filter(|n| !kept.iter().any(|p| p["metadata"]["name"] == n.as_str()))
            .collect(),
        "Deployment" => (kept.len() as i64..replicas)
            .map(|_| format!("{name}-{hash}-{}", random_suffix()))
            .collect(),
        _ => (kept.len() as i64..replicas)
            .map(|_| format!("{name}-{}", random_suffix()))
            .collect(),
    };
    for pname in missing {
        let mut labels = w["spec"]["template"]["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        match kind {
            "StatefulSet" => {
                labels["controller-revision-hash"] = json!(revision);
                labels["statefulset.kubernetes.io/pod-name"] = json!(pname);
                labels["apps.kubernetes.io/pod-index"] =
                    json!(pname.rsplit('-').next().unwrap_or("0"));
            }
            "DaemonSet" => {
                labels["controller-revision-hash"] = json!(hash);
                labels["pod-template-generation"] = json!(w["metadata"]["generation"]
                    .as_i64()
                    .unwrap_or(1)
                    .to_string());
            }
            _ => labels["pod-template-hash"] = json!(hash),
        }
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pname, "namespace": ns, "labels": labels, "ownerReferences": [owner_ref(w, true)]},
            "spec": w["spec"]["template"]["spec"]});
        if let Some(a) = w["spec"]["template"]["metadata"]["annotations"].as_object() {
            pod["metadata"]["annotations"] = json!(a);
        }
        if kind == "StatefulSet" {
            pod["spec"]["hostname"] = json!(pname);
            if let Some(svc) = w["spec"]["serviceName"].as_str() {
                pod["spec"]["subdomain"] = json!(svc);
            }
        }
        pod["spec"]["nodeName"] = json!(node_name(store));
        let mut inner = store.lock();
        match objects::create(
            &mut inner,
            &pod_rt,
            &ns,
            pod.clone(),
            &mut ctx(&format!("{}-controller", kind.to_lowercase())),
        ) {
            Ok(p) => kept.push(p),
            Err(e) => anyhow::bail!("creating pod {pname}: {}", e.message),
        }
    }
    // The kubelet: pod status.
    let is_vault = w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "vault";
    let mut ready = 0;
    let mut updated = 0;
    for p in &kept {
        let pname = p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (phase, is_ready, pending_msg) = if is_vault {
            vault_pod(store, env, state, http, w, p).await
        } else {
            ("Running", true, None)
        };
        let status = pod_status(p, phase, is_ready, pending_msg.as_deref());
        let cur = store.lock().get("", "pods", &ns, &pname).cloned();
        if let Some(cur) = cur {
            let same = cur["status"]["phase"] == phase
                && pod_ready(&cur) == is_ready
                && cur["status"]["conditions"][0]["message"] == status["conditions"][0]["message"];
            if !same {
                set_status(store, &pod_rt, &ns, &pname, status, "kubelet");
            }
        }
        if is_ready {
            ready += 1;
        }
        if is_current(p) {
            updated += 1;
        }
    }
    let total = kept.len() as i64;
    let gen = w["metadata"]["generation"].as_i64().unwrap_or(1);
    let mut status = w["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    status["observedGeneration"] = json!(gen);
    match kind {
        "Deployment" => {
            status["replicas"] = json!(total);
            status["updatedReplicas"] = json!(updated);
            status["readyReplicas"] = json!(ready);
            status["availableReplicas"] = json!(ready);
            status["unavailableReplicas"] = json!((total - ready).max(0));
            let avail = ready >= replicas;
            let done = avail && updated >= replicas && total <= updated;
            let old = &w["status"]["conditions"];
            let keep = |t: &str, st: &str, reason: &str, msg: &str| match old
                .as_array()
                .and_then(|a| a.iter().find(|c| c["type"] == t))
            {
                Some(c) if c["status"] == st && c["reason"] == reason => c.clone(),
                _ => condition(t, st, reason, msg),
            };
            status["conditions"] = json!([
                if avail {
                    keep(
                        "Available",
                        "True",
                        "MinimumReplicasAvailable",
                        "Deployment has minimum availability.",
                    )
                } else {
                    keep(
                        "Available",
                        "False",
                        "MinimumReplicasUnavailable",
                        "Deployment does not have minimum availability.",
                    )
                },
                if done {
                    keep(
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        &format!("ReplicaSet \"{name}-{hash}\" has successfully progressed."),
                    )
                } else {
                    keep(
                        "Progressing",
                        "True",
                        "ReplicaSetUpdated",
                        &format!("ReplicaSet \"{name}-{hash}\" is progressing."),
                    )
                },
            ]);
            for k in [
                "readyReplicas",
                "availableReplicas",
                "unavailableReplicas",
                "updatedReplicas",
            ] {
                if status[k] == 0 {
                    status.as_object_mut().expect("status").remove(k);
                }
            }
        }
        "StatefulSet" => {
            status["replicas"] = json!(total);
            status["readyReplicas"] = json!(ready);
            status["availableReplicas"] = json!(ready);
            status["currentReplicas"] = json!(updated);
            status["updatedReplicas"] = json!(updated);
            status["updateRevision"] = json!(revision);
            status["currentRevision"] = json!(if updated >= total {
                revision.clone()
            } else {
                w["status"]["currentRevision"]
                    .as_str()
                    .unwrap_or(&revision)
                    .to_string()
            });
            status["collisionCount"] = json!(0);
            if ready == 0 {
                let m = status.as_object_mut().expect("status");
                m.remove("readyReplicas");
                m.remove("availableReplicas");
            }
        }
        _ => {
            status["currentNumberScheduled"] = json!(total);
            status["desiredNumberScheduled"] = json!(1);
            status["numberMisscheduled"] = json!(0);
            status["numberReady"] = json!(ready);
            status["numberAvailable"] = json!(ready);
            status["updatedNumberScheduled"] = json!(updated);
            if ready < 1 {
                status["numberUnavailable"] = json!(1);
            } else if let Some(m) = status.as_object_mut() {
                m.remove("numberUnavailable");
            }
        }
    }
    let rt = rtype(store, "apps/v1", kind).expect("workload served");
    set_status(
        store,
        &rt,
        &ns,
        &name,
        status,
        &format!("{}-controller", kind.to_lowercase()),
    );
    Ok(())
}

fn node_name(store: &Store) -> String {
    store
        .lock()
        .list("", "nodes", None)
        .first()
        .and_then(|n| n["metadata"]["name"].as_str().map(String::from))
        .unwrap_or_else(|| "lab".into())
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn pod_status(p: &Value, phase: &str, ready: bool, pending: Option<&str>) -> Value {
    let t = p["status"]["startTime"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(now);
    if phase == "Pending" {
        return json!({"phase": "Pending", "qosClass": "BestEffort", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": pending.unwrap_or(""), "lastTransitionTime": t}]});
    }
    let r = if ready { "True" } else { "False" };
    let containers: Vec<Value> = p["spec"]["containers"].as_array().into_iter().flatten()
        .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": ready, "started": true, "restartCount": 0, "state": {"running": {"startedAt": t}}}))
        .collect();
    let mut ready_cond = json!({"type": "Ready", "status": r, "lastTransitionTime": t});
    let mut cready = json!({"type": "ContainersReady", "status": r, "lastTransitionTime": t});
    if !ready {
        let names: Vec<&str> = p["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        ready_cond["reason"] = json!("ContainersNotReady");
        ready_cond["message"] = json!(format!(
            "containers with unready status: [{}]",
            names.join(" ")
        ));
        cready["reason"] = ready_cond["reason"].clone();
        cready["message"] = ready_cond["message"].clone();
    }
    json!({"phase": "Running", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
           "startTime": t, "qosClass": "BestEffort",
           "conditions": [
               {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": t},
               {"type": "Initialized", "status": "True", "lastTransitionTime": t},
               ready_cond, cready,
               {"type": "PodScheduled", "status": "True", "lastTransitionTime": t}],
           "containerStatuses": containers})
}

// ---------------------------------------------------------------- Vault

#[derive(Default)]
struct HttpPoller;

impl HttpPoller {
    /// `sealed` from lab-vault's seal-status (None when it does not answer).
    async fn sealed(&self, addr: SocketAddr) -> Option<bool> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let fut = async {
            let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
            s.write_all(
                format!(
                    "GET /v1/sys/seal-status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .ok()?;
            let mut buf = vec![];
            s.read_to_end(&mut buf).await.ok()?;
            let text = String::from_utf8_lossy(&buf);
            let body = text.split("\r\n\r\n").nth(1)?;
            let v: Value = serde_json::from_str(body.trim()).ok()?;
            v["sealed"].as_bool()
        };
        tokio::time::timeout(Duration::from_secs(1), fut)
            .await
            .ok()
            .flatten()
    }
}

/// Where the Service `ns/name` is reachable from the node, making it so if needed.
fn service_address(
    store: &Store,
    env: &LabEnv,
    ns: &str,
    name: &str,
    port: u16,
) -> anyhow::Result<SocketAddr> {
    let svc = store
        .lock()
        .get("", "services", ns, name)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("Service {ns}/{name} not found"))?;
    if env.node {
        let ip = svc["spec"]["clusterIP"]
            .as_str()
            .filter(|ip| *ip != "None")
            .ok_or_else(|| anyhow::anyhow!("Service {ns}/{name} has no ClusterIP"))?;
        let out = std::process::Command::new("ip")
            .args(["addr", "replace", &format!("{ip}/32"), "dev", "lo"])
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "ip addr replace {ip}/32 dev lo: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        return Ok(format!("{ip}:{port}").parse()?);
    }
    if let Some(a) = svc["metadata"]["annotations"][NODE_ADDRESS_ANNOTATION]
        .as_str()
        .and_then(|a| a.parse().ok())
    {
        return Ok(a);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let rt = rtype(store, "v1", "Service").expect("Service served");
    let mut inner = store.lock();
    let mut obj = svc.clone();
    obj["metadata"]["annotations"][NODE_ADDRESS_ANNOTATION] = json!(addr.to_string());
    objects::update(
        &mut inner,
        &rt,
        ns,
        name,
        obj,
        &mut ctx("lab-kube-proxy"),
        None,
        objects::Managed::Update,
    )
    .map_err(|e| anyhow::anyhow!("annotating Service {ns}/{name}: {}", e.message))?;
    Ok(addr)
}

/// (phase, ready, pending message) of a Vault pod, starting its lab-vault when it can run.
async fn vault_pod(
    store: &Store,
    env: &LabEnv,
    state: &mut State,
    http: &HttpPoller,
    w: &Value,
    p: &Value,
) -> (&'static str, bool, Option<String>) {
    let ns = p["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pname = p["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let key = format!("{ns}/{pname}");
    // The claim it mounts must be bound.
    let claim = p["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|v| {
            v["persistentVolumeClaim"]["claimName"]
                .as_str()
                .map(String::from)
        });
    let data_dir = match claim {
        None => env.lab_dir("vault").join(&ns).join(&pname),
        Some(c) => {
            let pvc = store
                .lock()
                .get("", "persistentvolumeclaims", &ns, &c)
                .cloned();
            let pv_name = pvc.as_ref().and_then(|pvc| {
                pvc["spec"]["volumeName"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(String::from)
            });
            let handle = pv_name
                .as_ref()
                .and_then(|pv| store.lock().get("", "persistentvolumes", "", pv).cloned())
                .and_then(|pv| pv["spec"]["csi"]["volumeHandle"].as_str().map(String::from));
            match (pvc, handle) {
                (None, _) => return ("Pending", false, Some(format!("0/1 nodes are available: persistentvolumeclaim \"{c}\" not found."))),
                (Some(_), None) => return ("Pending", false, Some("0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.".into())),
                (Some(_), Some(vol)) => volume_data_dir(&env.data_dir, &vol),
            }
        }
    };
    let svc_name = w["metadata"]["name"]
        .as_str()
        .unwrap_or("vault")
        .to_string();
    // (Re)start lab-vault when missing, exited or pointed at another volume.
    let restart = match state.vaults.get_mut(&key) {
        None => true,
        Some(v) => v.data_dir != data_dir || !matches!(v.child.try_wait(), Ok(None)),
    };
    if restart {
        if let Some(mut old) = state.vaults.remove(&key) {
            let _ = old.child.start_kill();
        }
        match start_vault(store, env, &ns, &svc_name, &data_dir) {
            Ok(v) => {
                state.vaults.insert(key.clone(), v);
            }
            Err(e) => {
                eprintln!("lab-k3s kubelet: starting lab-vault for {key}: {e:#}");
                return ("Running", false, None);
            }
        }
    }
    let addr = state.vaults[&key].addr;
    let unsealed = http.sealed(addr).await == Some(false);
    state.unsealed.insert(key, unsealed);
    ("Running", unsealed, None)
}

fn start_vault(
    store: &Store,
    env: &LabEnv,
    ns: &str,
    svc: &str,
    data_dir: &Path,
) -> anyhow::Result<VaultProc> {
    let bin = env.bin_dir.as_ref().map(|d| d.join("lab-vault")).filter(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("lab-vault not found (set LAB_BIN_DIR, or install it next to lab-k3s or in /usr/local/lib/rebox-lab)"))?;
    let addr = service_address(store, env, ns, svc, 8200)?;
    std::fs::create_dir_all(data_dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.lab_dir("vault").join("lab-vault.log"))
        .or_else(|_| {
            std::fs::create_dir_all(env.lab_dir("vault"))?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(env.lab_dir("vault").join("lab-vault.log"))
        })?;
    // --pdeathsig: lab-vault dies with lab-k3s (power loss), as a pod's process would.
    let child = tokio::process::Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--"])
        .arg(bin)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        // The lab's fault switches (vaultRefuseUnseal) live in lab-k3s's data dir.
        .env("LAB_FAULTS", env.data_dir.join("lab-faults.json"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    Ok(VaultProc {
        child,
        addr,
        data_dir: data_dir.to_path_buf(),
    })
}
