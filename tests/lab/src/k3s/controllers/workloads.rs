//! The workload controllers (Deployment, StatefulSet, DaemonSet) and the kubelet's view of
//! their pods, plus Vault's pod `vault-0` backed by the real OpenBao server (`bao`).
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
//! Vault (pods of a template labelled `app.kubernetes.io/name: vault`) is the real OpenBao
//! server, `bao server` ([`crate::bao`]: the binary from `scripts/setup`, or `$LAB_BAO`). A pod
//! that mounts a PVC stays `Pending` (PodScheduled False, `unbound immediate
//! PersistentVolumeClaims`) until the claim's `spec.volumeName` names a PV; the PV's
//! `spec.csi.volumeHandle` is the Longhorn volume, whose directory ([`volume_data_dir`], the
//! contract with the Longhorn controller) is raft's `path`, so Longhorn's backups carry the
//! real raft data. bao listens on the address of the Service of the same name as the
//! StatefulSet, port 8200 (raft's cluster port 8201 beside it): its ClusterIP when
//! [`LabEnv::node`] (the ClusterIP is added as a /32 on `lo`, as kube-proxy makes Services
//! reachable from the node), else a free 127.0.0.1 port recorded in the Service annotation
//! [`NODE_ADDRESS_ANNOTATION`] (tests on the host). Its config, log and pid are in
//! [`vault_run_dir`]. The pod is `Running`; `Ready` only while `/v1/sys/seal-status` says
//! unsealed (polled every 200 ms), the readiness probe `vault status` of vault-helm. A process
//! that exits is started again (the container's `restartCount` goes up) and comes back sealed
//! with its data; a replaced pod (same name, new uid) gets a new process; on a lab-k3s restart
//! (power loss) every process is started afresh. [`restart_vault_command`] is that crash, for
//! tests.
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
use crate::bao;
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
    /// The pod this process belongs to (a new pod of the same name gets a new process).
    pod_uid: String,
    /// Restarts of the container in this pod (exits followed by a new start).
    restarts: u32,
    /// When the kubelet last wrote the pod's service-account token (refreshed at 80 % of
    /// its lifetime, as kubelet's `pkg/kubelet/token/token_manager.go` `requiresRefresh`).
    token_at: std::time::Instant,
}

#[derive(Default)]
struct State {
    vaults: HashMap<String, VaultProc>,
}

pub async fn run(store: Arc<Store>, env: LabEnv) {
    if env.node {
        if let Err(e) = kubernetes_service_proxy(&env).await {
            eprintln!(
                "lab-k3s kube-proxy: Service default/kubernetes at {KUBERNETES_SERVICE_IP}:443: {e:#}"
            );
        }
    }
    let mut state = State::default();
    let mut rx = store.subscribe();
    loop {
        for (plural, kind) in [
            ("deployments", "Deployment"),
            ("statefulsets", "StatefulSet"),
            ("daemonsets", "DaemonSet"),
        ] {
            let listed = store.lock().list("apps", plural, None);
            for w in listed {
                if let Err(e) = reconcile(&store, &env, &mut state, kind, &w).await {
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
        let (phase, is_ready, pending_msg, restarts) = if is_vault {
            vault_pod(store, env, state, w, p).await
        } else {
            ("Running", true, None, 0)
        };
        let status = pod_status(p, phase, is_ready, pending_msg.as_deref(), restarts);
        let cur = store.lock().get("", "pods", &ns, &pname).cloned();
        if let Some(cur) = cur {
            let same = cur["status"]["phase"] == phase
                && pod_ready(&cur) == is_ready
                && cur["status"]["conditions"][0]["message"] == status["conditions"][0]["message"]
                && cur["status"]["containerStatuses"][0]["restartCount"]
                    == status["containerStatuses"][0]["restartCount"];
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

fn pod_status(p: &Value, phase: &str, ready: bool, pending: Option<&str>, restarts: u32) -> Value {
    let t = p["status"]["startTime"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(now);
    if phase == "Pending" && pending.is_some_and(|m| m.starts_with("MountVolume.")) {
        // Scheduled, but the kubelet could not set up a volume: the container waits in
        // ContainerCreating (the mount error is the kubelet's FailedMount event upstream;
        // here it is also the first condition's message, where `kubectl get pod -o json`
        // shows it).
        let containers: Vec<Value> = p["spec"]["containers"].as_array().into_iter().flatten()
            .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false, "started": false, "restartCount": restarts, "state": {"waiting": {"reason": "ContainerCreating"}}}))
            .collect();
        return json!({"phase": "Pending", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "startTime": t, "qosClass": "BestEffort",
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "False", "message": pending.unwrap_or(""), "lastTransitionTime": t},
                {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": t},
                {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": t},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": t}],
            "containerStatuses": containers});
    }
    if phase == "Pending" {
        return json!({"phase": "Pending", "qosClass": "BestEffort", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": pending.unwrap_or(""), "lastTransitionTime": t}]});
    }
    let r = if ready { "True" } else { "False" };
    let containers: Vec<Value> = p["spec"]["containers"].as_array().into_iter().flatten()
        .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": ready, "started": true, "restartCount": restarts, "state": {"running": {"startedAt": t}}}))
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

/// `<lab-k3s data dir>/lab/vault/<ns>/<pod>/`: the kubelet's files for a Vault pod — `config.json`
/// (what the chart's ConfigMap would be), `bao.log` (the container log) and `pid` (the running
/// process, as a container runtime knows it; [`restart_vault_command`] reads it). Not in the
/// volume: only Vault's own data is backed up.
pub fn vault_run_dir(data_dir: &Path, ns: &str, pod: &str) -> PathBuf {
    data_dir.join("lab/vault").join(ns).join(pod)
}

/// A shell command, run as root on the lab node, that restarts Vault pod `ns/pod`'s process
/// the way a crash does (SIGKILL to the process; the kubelet starts it again, and Vault comes
/// back sealed), then waits up to `deadline_secs` until a NEW process answers seal-status
/// with `"sealed":true` at the Service's ClusterIP. Fails (non-zero) past the deadline.
pub fn restart_vault_command(ns: &str, pod: &str, svc: &str, deadline_secs: u32) -> String {
    let pid = vault_run_dir(Path::new("/var/lib/rancher/k3s"), ns, pod).join("pid");
    let pid = pid.display();
    format!(
        r#"set -eu
old=$(cat {pid})
kill -KILL "$old"
ip=$(KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl -n {ns} get svc {svc} -o jsonpath='{{.spec.clusterIP}}')
timeout {deadline_secs} sh -c 'until [ "$(cat {pid} 2>/dev/null)" != "$0" ] && curl -s --max-time 2 "http://$1:8200/v1/sys/seal-status" | grep -q "\"sealed\":true"; do sleep 0.1; done' "$old" "$ip" || {{ echo "vault {ns}/{pod}: no new sealed process within {deadline_secs}s" >&2; exit 1; }}"#
    )
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
        add_lo_address(ip)?;
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

/// Adds `ip/32` on `lo` (node mode only): how kube-proxy makes a ClusterIP reachable here.
fn add_lo_address(ip: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(["addr", "replace", &format!("{ip}/32"), "dev", "lo"])
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "ip addr replace {ip}/32 dev lo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The ClusterIP of Service `default/kubernetes` (the first address of k3s's service CIDR).
pub const KUBERNETES_SERVICE_IP: &str = "10.43.0.1";

/// kube-proxy for Service `default/kubernetes` (node mode): `10.43.0.1:443` forwards TCP to
/// the API server's own port (the Service's endpoint), so TLS is the API server's, whose
/// certificate names `kubernetes.default.svc` and 10.43.0.1 ([`crate::k3s::tls`]). A pod
/// reaches `https://kubernetes.default.svc` as on a cluster.
async fn kubernetes_service_proxy(env: &LabEnv) -> anyhow::Result<()> {
    add_lo_address(KUBERNETES_SERVICE_IP)?;
    let listener =
        tokio::net::TcpListener::bind((KUBERNETES_SERVICE_IP.parse::<std::net::IpAddr>()?, 443))
            .await?;
    let target = if env.api.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], env.api.port()))
    } else {
        env.api
    };
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut api) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut api).await;
                }
            });
        }
    });
    Ok(())
}

/// Where a pod's service account files are mounted (the kubelet's `kube-api-access` volume).
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Writes the pod's `kube-api-access` files under `<run>/serviceaccount/` (token 0600, as
/// kubelet's `pkg/volume/projected/projected.go` does when the pod has an fsGroup, which
/// vault-helm sets; `ca.crt` and `namespace` 0644). Each file is replaced by a rename in
/// that directory, so a bind mount of the directory sees a refreshed token (the kubelet's
/// atomic writer swaps a `..data` symlink for the same reason). Err when the kubelet could
/// not get a token (ServiceAccount gone): the container is not created.
fn write_service_account(
    store: &Store,
    env: &LabEnv,
    pod: &Value,
    run: &Path,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = run.join("serviceaccount");
    std::fs::create_dir_all(&dir)?;
    let Some(data) = super::jobs::kube_api_access(store, env, pod)? else {
        return Ok(());
    };
    for (k, v) in data {
        let mode = if k == "token" { 0o600 } else { 0o644 };
        let tmp = dir.join(format!(".{k}.tmp"));
        std::fs::write(&tmp, v)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, dir.join(&k))?;
    }
    Ok(())
}

/// The pod's `/etc/hosts`: the kubelet-managed file (`pkg/kubelet/kubelet_pods.go`
/// `managedHostsFileContent`) plus, standing in for cluster DNS (CoreDNS), the `kubernetes`
/// Service's names and every Service's `<name>.<ns>.svc` names.
fn pod_hosts(store: &Store, pod: &Value) -> String {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let host = pod["spec"]["hostname"]
        .as_str()
        .or(pod["metadata"]["name"].as_str())
        .unwrap_or_default();
    let mut fqdn = String::new();
    if let Some(sub) = pod["spec"]["subdomain"].as_str() {
        fqdn = format!("{host}.{sub}.{ns}.svc.cluster.local\t");
    }
    let mut out = format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n127.0.0.1\t{fqdn}{host}\n\n# lab cluster DNS\n{KUBERNETES_SERVICE_IP}\tkubernetes.default.svc.cluster.local kubernetes.default.svc kubernetes.default kubernetes\n"
    );
    for line in super::jobs::service_hosts(store, ns) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// raft's cluster address beside the API address: port 8201 on the ClusterIP (as the chart's
/// `cluster_addr`), or a free 127.0.0.1 port when the API is on a host port.
fn cluster_address(api: SocketAddr) -> anyhow::Result<SocketAddr> {
    if api.ip().is_loopback() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        return Ok(SocketAddr::new(api.ip(), port));
    }
    Ok(SocketAddr::new(api.ip(), 8201))
}

/// (phase, ready, pending message, restarts) of a Vault pod, starting its bao when it can run.
async fn vault_pod(
    store: &Store,
    env: &LabEnv,
    state: &mut State,
    w: &Value,
    p: &Value,
) -> (&'static str, bool, Option<String>, u32) {
    let ns = p["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pname = p["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let uid = p["metadata"]["uid"]
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
        None => vault_run_dir(&env.data_dir, &ns, &pname).join("data"),
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
                (None, _) => return ("Pending", false, Some(format!("0/1 nodes are available: persistentvolumeclaim \"{c}\" not found.")), 0),
                (Some(_), None) => return ("Pending", false, Some("0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.".into()), 0),
                (Some(_), Some(vol)) => volume_data_dir(&env.data_dir, &vol),
            }
        }
    };
    let svc_name = w["metadata"]["name"]
        .as_str()
        .unwrap_or("vault")
        .to_string();
    // (Re)start bao when missing, exited, pointed at another volume, or the pod was replaced
    // (a deleted vault-0 comes back as a new pod with a new process). A process that exited
    // under the same pod is a container restart: counted, as the kubelet's restartCount.
    let (restart, exited) = match state.vaults.get_mut(&key) {
        None => (true, false),
        Some(v) => {
            let exited = !matches!(v.child.try_wait(), Ok(None));
            (
                v.data_dir != data_dir || v.pod_uid != uid || exited,
                exited && v.pod_uid == uid,
            )
        }
    };
    let run = vault_run_dir(&env.data_dir, &ns, &pname);
    if restart {
        // The kubelet mounts the pod's volumes before it creates the container: without a
        // token for its ServiceAccount (e.g. deleted) the container is never created and the
        // pod stays Pending (kubelet: `MountVolume.SetUp failed for volume
        // "kube-api-access-…" : failed to fetch token: serviceaccounts "x" not found`).
        if let Err(e) = write_service_account(store, env, p, &run) {
            let restarts = state.vaults.get(&key).map(|v| v.restarts).unwrap_or(0);
            if let Some(mut old) = state.vaults.remove(&key) {
                let _ = old.child.start_kill();
            }
            return ("Pending", false, Some(format!("{e:#}")), restarts);
        }
        let restarts = match state.vaults.remove(&key) {
            Some(mut old) => {
                let _ = old.child.start_kill();
                if exited {
                    old.restarts + 1
                } else if old.pod_uid == uid {
                    old.restarts
                } else {
                    0
                }
            }
            None => 0,
        };
        match start_vault(store, env, p, &svc_name, &data_dir) {
            Ok((child, addr)) => {
                state.vaults.insert(
                    key.clone(),
                    VaultProc {
                        child,
                        addr,
                        data_dir: data_dir.clone(),
                        pod_uid: uid,
                        restarts,
                        token_at: std::time::Instant::now(),
                    },
                );
            }
            Err(e) => {
                eprintln!("lab-k3s kubelet: starting vault (bao) for {key}: {e:#}");
                return ("Running", false, None, restarts);
            }
        }
    }
    let v = state.vaults.get_mut(&key).expect("started above");
    // The kubelet's token refresh (80 % of the 3607 s lifetime); a failure keeps the old
    // token, as the kubelet does until it expires.
    let refresh = Duration::from_secs(crate::k3s::satoken::KUBELET_EXPIRATION as u64 * 8 / 10);
    if v.token_at.elapsed() >= refresh && write_service_account(store, env, p, &run).is_ok() {
        v.token_at = std::time::Instant::now();
    }
    let (addr, restarts) = (v.addr, v.restarts);
    let unsealed = bao::seal_status(addr)
        .await
        .is_some_and(|s| s["sealed"] == false);
    ("Running", unsealed, None, restarts)
}

/// Starts the pod's bao. Node mode: as a container sees the cluster — in a private mount
/// namespace (`unshare --mount --propagation private`, the node's mounts untouched) where the
/// kubelet's `kube-api-access` files are at [`SERVICE_ACCOUNT_MOUNT`] (read-only) and
/// `/etc/hosts` is the pod's ([`pod_hosts`]), with `KUBERNETES_SERVICE_HOST/PORT` =
/// 10.43.0.1:443 (kubelet's `pkg/kubelet/kubelet_pods.go` service env). So OpenBao's
/// Kubernetes auth with only `kubernetes_host = "https://kubernetes.default.svc"` reads the
/// CA and its reviewer JWT from the files (`builtin/credential/kubernetes/backend.go`
/// `localCACertPath`/`localJWTPath`) and reaches the API through [`kubernetes_service_proxy`].
/// Host mode (tests on the host, maybe unprivileged): no mount namespace, no /etc/hosts and
/// no 10.43.0.1 (the lab never changes the host's network or mounts), so in-cluster
/// Kubernetes auth does not work there; the files are still written (and a missing
/// ServiceAccount still keeps the pod Pending).
fn start_vault(
    store: &Store,
    env: &LabEnv,
    p: &Value,
    svc: &str,
    data_dir: &Path,
) -> anyhow::Result<(tokio::process::Child, SocketAddr)> {
    let ns = p["metadata"]["namespace"].as_str().unwrap_or_default();
    let pod = p["metadata"]["name"].as_str().unwrap_or_default();
    let bin = bao::binary()?;
    let addr = service_address(store, env, ns, svc, 8200)?;
    std::fs::create_dir_all(data_dir)?;
    let run = vault_run_dir(&env.data_dir, ns, pod);
    std::fs::create_dir_all(&run)?;
    let config = run.join("config.json");
    bao::write_config(
        &config,
        &bao::Layout {
            listen: addr,
            cluster: cluster_address(addr)?,
            data_dir: data_dir.to_path_buf(),
            node_id: pod.to_string(),
            openbao_defaults: false,
        },
    )?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.join("bao.log"))?;
    let child = if env.node {
        let hosts = run.join("hosts");
        std::fs::write(&hosts, pod_hosts(store, p))?;
        let script = format!(
            "set -e\nmkdir -p {SERVICE_ACCOUNT_MOUNT}\nmount --bind \"$1\" {SERVICE_ACCOUNT_MOUNT}\nmount -o remount,bind,ro {SERVICE_ACCOUNT_MOUNT}\nmount --bind \"$2\" /etc/hosts\nexec setpriv --pdeathsig KILL -- \"$3\" server \"-config=$4\"\n"
        );
        tokio::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(script)
            .arg("sh")
            .arg(run.join("serviceaccount"))
            .arg(&hosts)
            .arg(&bin)
            .arg(&config)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOSTNAME", pod)
            .env("KUBERNETES_SERVICE_HOST", KUBERNETES_SERVICE_IP)
            .env("KUBERNETES_SERVICE_PORT", "443")
            .env("KUBERNETES_SERVICE_PORT_HTTPS", "443")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?
    } else {
        bao::spawn(&bin, &config, log)?
    };
    if let Some(pid) = child.id() {
        std::fs::write(run.join("pid"), format!("{pid}\n"))?;
    }
    Ok((child, addr))
}
