//! Simulated controllers that run inside the lab-k3s process (issue 5) and give the lab
//! cluster life, each subscribed to the store's event bus ([`Store::subscribe`]) and writing
//! through the same object verbs the API uses (validation, resourceVersions, generation).
//!
//! - [`crds`]: the CRDs k3s and the charts bring, generated from our own typed structs;
//! - [`helm`]: k3s's helm-controller (HelmChart → `helm-install-<name>` Job → chart objects);
//! - [`workloads`]: Deployments/StatefulSets/DaemonSets → pods and rollout status; Services get
//!   node-reachable addresses; `vault-0` backed by the real OpenBao server (`bao`);
//! - [`jobs`]: Jobs run their container command for real on the node; CronJobs on [`Clock`];
//! - [`pv_binder`]: kube-controller-manager's PV/PVC binding and PV phases;
//! - [`longhorn`], [`eso`], [`argocd`]: stand-ins for those projects' controllers, writing
//!   through the store helpers in `ops`.
//!
//! [`LabEnv`] is what they share, built by [`LabEnv::from_env`] at lab-k3s startup:
//!
//! - `data_dir`: lab-k3s's data dir (`/var/lib/rancher/k3s` on the lab server); controllers keep
//!   their state under `<data_dir>/lab/`.
//! - [`Clock`]: the lab clock. `LAB_CLOCK_SPEED=N` (N ≥ 1, default 1) makes lab time run N
//!   times faster than wall time from the start of the process, so a `* * * * *` CronJob fires
//!   every 60/N seconds; timestamps written into objects stay wall-clock (real API servers
//!   stamp with their own clock), only schedules use lab time.
//! - `node`: whether this lab-k3s may change the node's network (add Service ClusterIPs as
//!   /32 on `lo`, like kube-proxy makes them reachable). True only when `LAB_NODE=1` is set (the
//!   lab server's k3s environment) AND the process is root AND it is not in the initial
//!   network namespace (its netns differs from PID 1's, or, inside a lab server's own PID
//!   namespace, the lab's marker file [`LAB_NODE_MARKER`] exists). Tests on the host therefore never
//!   touch the host's network: Services there get a 127.0.0.1 port instead, recorded in the
//!   Service annotation [`workloads::NODE_ADDRESS_ANNOTATION`].
//! - `api`: the API address pods reach (`KUBERNETES_SERVICE_HOST/PORT`) and the CA they trust.

pub mod argocd;
pub mod crds;
pub mod eso;
pub mod helm;
pub mod jobs;
pub mod longhorn;
pub(crate) mod ops;
pub mod pv_binder;
pub mod workloads;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::admit::{FieldValidation, WriteCtx};
use super::objects::{self, Managed};
use super::registry::ResourceType;
use super::store::Store;

/// The lab clock: wall time for stamps, `speed`× time for schedules.
#[derive(Clone, Debug)]
pub struct Clock {
    pub speed: u32,
    start_wall: chrono::DateTime<chrono::Utc>,
    start: Instant,
}

impl Clock {
    pub fn new(speed: u32) -> Clock {
        Clock {
            speed: speed.max(1),
            start_wall: chrono::Utc::now(),
            start: Instant::now(),
        }
    }
    /// Lab time now: the process start plus `speed`× the time elapsed since.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let lab = self.start.elapsed() * self.speed;
        self.start_wall + chrono::Duration::from_std(lab).unwrap_or_default()
    }
    /// The wall duration until lab time `t` (zero if it has passed).
    pub fn wall_until(&self, t: chrono::DateTime<chrono::Utc>) -> Duration {
        let d = (t - self.now()).to_std().unwrap_or_default();
        d / self.speed
    }
}

#[derive(Clone, Debug)]
pub struct LabEnv {
    pub data_dir: PathBuf,
    pub clock: Clock,
    pub node: bool,
    /// Where pods reach the API (lab server: 127.0.0.1:6443).
    pub api: SocketAddr,
    /// PEM of the cluster CA (the pods' `ca.crt`).
    pub ca_pem: String,
}

/// Whether this process runs in a network namespace other than PID 1's (a lab server).
/// Written by the lab server's setup inside its overlay only. Inside a lab server, PID 1 is the
/// lab's own holder process in the lab's network namespace, so the netns comparison below
/// cannot tell; this marker can (the host never has it).
pub const LAB_NODE_MARKER: &str = "/etc/rebox-lab/node";

fn in_private_netns() -> bool {
    match (
        std::fs::read_link("/proc/self/ns/net"),
        std::fs::read_link("/proc/1/ns/net"),
    ) {
        (Ok(a), Ok(b)) => a != b,
        // PID 1's namespace unreadable: we are not root in the initial namespace anyway.
        _ => false,
    }
}

impl LabEnv {
    pub fn from_env(data_dir: &Path, api: SocketAddr, ca_pem: String) -> LabEnv {
        let speed = std::env::var("LAB_CLOCK_SPEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let root = std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false);
        LabEnv {
            data_dir: data_dir.to_path_buf(),
            clock: Clock::new(speed),
            node: std::env::var("LAB_NODE").as_deref() == Ok("1")
                && root
                && (in_private_netns() || Path::new(LAB_NODE_MARKER).exists()),
            api,
            ca_pem,
        }
    }
    /// `<data_dir>/lab/<sub>`: controllers' own state.
    pub fn lab_dir(&self, sub: &str) -> PathBuf {
        self.data_dir.join("lab").join(sub)
    }
}

/// Starts every controller as a task of the current tokio runtime.
pub fn spawn_all(store: Arc<Store>, env: LabEnv) {
    if let Err(e) = register_crds(&store, &crds::k3s_builtin()) {
        eprintln!("lab-k3s: registering helm-controller CRDs: {e:#}");
    }
    tokio::spawn(helm::run(store.clone(), env.clone()));
    tokio::spawn(workloads::run(store.clone(), env.clone()));
    tokio::spawn(jobs::run(store.clone(), env.clone()));
    tokio::spawn(pv_binder::run(store.clone()));
    // The other engineer's controllers (Longhorn, ESO, Argo CD), each with its own spawn.
    longhorn::spawn(store.clone(), &env);
    eso::spawn(store.clone(), &env);
    argocd::spawn(store, &env);
}

// ---------------------------------------------------------------- helpers for controllers

/// The label helm-controller puts on its `helm-install-<name>` Jobs. Here so that [`helm`]
/// (which runs those Jobs' pods itself) and [`jobs`] (which leaves them alone) both read it
/// from below, and neither imports the other for it.
pub const HELM_CHART_LABEL: &str = "helmcharts.helm.cattle.io/chart";

pub fn ctx(manager: &str) -> WriteCtx {
    WriteCtx {
        validation: FieldValidation::Strict,
        warnings: vec![],
        dry_run: false,
        manager: manager.into(),
    }
}

/// The served type of `apiVersion` + `kind`.
pub fn rtype(store: &Store, api_version: &str, kind: &str) -> Option<ResourceType> {
    store
        .lock()
        .types
        .iter()
        .find(|t| t.api_version() == api_version && t.kind == kind)
        .cloned()
}

/// Creates or (when its spec differs) updates the CRDs, as a chart's crds/ directory does.
pub fn register_crds(store: &Store, crds: &[Value]) -> anyhow::Result<()> {
    for crd in crds {
        apply(store, crd.clone(), "k3s")?;
    }
    Ok(())
}

/// Creates `obj`, or updates the existing object's labels, annotations and spec/data when
/// they differ (what a helm upgrade does to an object it owns).
pub fn apply(store: &Store, obj: Value, manager: &str) -> anyhow::Result<Value> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let rt = rtype(store, &api_version, &kind)
        .ok_or_else(|| anyhow::anyhow!("{api_version} {kind} is not served"))?;
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut inner = store.lock();
    let mut c = ctx(manager);
    match inner.get(&rt.group, &rt.plural, &ns, &name).cloned() {
        None => objects::create(&mut inner, &rt, &ns, obj, &mut c)
            .map_err(|e| anyhow::anyhow!("creating {kind} {ns}/{name}: {}", e.message)),
        Some(old) => {
            let mut new = old.clone();
            for (k, v) in obj.as_object().into_iter().flatten() {
                if k != "metadata" && k != "status" {
                    new[k] = v.clone();
                }
            }
            for k in ["labels", "annotations"] {
                if !obj["metadata"][k].is_null() {
                    new["metadata"][k] = obj["metadata"][k].clone();
                }
            }
            if new == old {
                return Ok(old);
            }
            objects::update(
                &mut inner,
                &rt,
                &ns,
                &name,
                new,
                &mut c,
                None,
                Managed::Update,
            )
            .map_err(|e| anyhow::anyhow!("updating {kind} {ns}/{name}: {}", e.message))
        }
    }
}

/// Replaces the `status` of an object (through the status subresource when it has one).
/// Returns None when the object is gone; a no-op when the status is unchanged.
pub fn set_status(
    store: &Store,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    status: Value,
    manager: &str,
) -> Option<Value> {
    let mut inner = store.lock();
    let mut obj = inner.get(&rt.group, &rt.plural, ns, name)?.clone();
    if obj["status"] == status {
        return Some(obj);
    }
    obj["status"] = status;
    let sub = rt.status.then_some("status");
    match objects::update(
        &mut inner,
        rt,
        ns,
        name,
        obj,
        &mut ctx(manager),
        sub,
        Managed::Update,
    ) {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!(
                "lab-k3s {manager}: status of {} {ns}/{name}: {}",
                rt.kind, e.message
            );
            None
        }
    }
}

/// Deletes an object if it exists (errors are logged: a controller retries on its next pass).
pub fn delete(store: &Store, rt: &ResourceType, ns: &str, name: &str) {
    let mut inner = store.lock();
    if inner.get(&rt.group, &rt.plural, ns, name).is_some() {
        if let Err(e) = objects::delete(&mut inner, rt, ns, name, &Value::Null, false) {
            eprintln!("lab-k3s: deleting {} {ns}/{name}: {}", rt.kind, e.message);
        }
    }
}

/// An ownerReference to `owner` (controller: true, as workload controllers set it).
pub fn owner_ref(owner: &Value, controller: bool) -> Value {
    let mut r = json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
    });
    if controller {
        r["controller"] = json!(true);
        r["blockOwnerDeletion"] = json!(true);
    }
    r
}

/// Whether `obj` lists an ownerReference with `uid`.
pub fn owned_by(obj: &Value, uid: &str) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

/// A Kubernetes quantity in bytes (`1Gi`, `500Mi`, `1G`, `1073741824`).
pub fn parse_quantity(q: &str) -> Option<i64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: f64 = n.parse().ok()?;
    let m: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    Some((n * m) as i64)
}

/// A condition entry with both timestamps set to now.
pub fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    let now = super::defaults::now();
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": now, "lastUpdateTime": now})
}

/// Waits for the next store event matching `interest` or `tick`, whichever comes first;
/// drains everything queued so one pass handles a burst. Returns false when the bus closed.
pub async fn next_pass(
    rx: &mut tokio::sync::broadcast::Receiver<super::store::Event>,
    tick: Duration,
    interest: impl Fn(&super::store::Event) -> bool,
) -> bool {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let deadline = tokio::time::sleep(tick);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return true,
            r = rx.recv() => match r {
                Ok(ev) if interest(&ev) => break,
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return false,
            },
        }
    }
    loop {
        match rx.try_recv() {
            Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Closed) => return false,
        }
    }
}
