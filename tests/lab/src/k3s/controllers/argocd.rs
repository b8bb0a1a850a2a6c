//! The Argo CD stand-in: Applications report sync and health after a short simulated sync,
//! the refresh annotation is honoured and removed, and a fault switch keeps chosen apps
//! OutOfSync with a sync error.
//!
//! Contract followed: `../shared/reference/platform-facts.md` §5:
//! - Applications in the namespace of Argo CD's application controller (StatefulSet or
//!   Deployment `argocd-application-controller`; nothing happens while none exists) get
//!   `status.sync.status` (`OutOfSync` while the sync runs, then `Synced`, with
//!   `sync.revision` and `sync.comparedTo`), `status.health.status` (`Progressing`, then
//!   `Healthy`), `status.operationState` (`phase` Running → Succeeded, `message`,
//!   `startedAt`, `finishedAt`, `syncResult.revision`, `operation.sync.revision`),
//!   `status.reconciledAt`, `status.sourceType`.
//! - Annotation `argocd.argoproj.io/refresh` (`normal` | `hard`): removed by the controller,
//!   `reconciledAt` advanced; a spec change or a refresh re-runs the sync.
//! - Fault switch `argocdOutOfSync` ([`crate::k3s::faults`]): the app stays `OutOfSync`,
//!   health `Degraded`, condition `SyncError` and `operationState.phase: Failed` with the
//!   message; a refresh is still removed (and does not help) until the switch is cleared.
//! - Fault switch `argocdStaleUntilHardRefresh`: the app stays `OutOfSync` with a
//!   `ComparisonError` condition (stale cached manifests) until a `hard` refresh is seen; from
//!   then on (for this process) it syncs as usual.
//!
//! The revision is a stable fake commit id (sha256 of repo, path and target revision, 40 hex).
//! Left out: Git, rendering and applying manifests, child apps of an app-of-apps,
//! ApplicationSets, projects' rules, automated-sync retry back-off.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::ops;
use crate::k3s::defaults::now;
use crate::k3s::faults;
use crate::k3s::store::Store;

const GROUP: &str = "argoproj.io";
const MANAGER: &str = "argocd-application-controller";
pub const REFRESH: &str = "argocd.argoproj.io/refresh";

#[derive(Clone, Debug)]
pub struct ArgoEnv {
    pub data_dir: PathBuf,
    /// How long a simulated sync runs.
    pub sync_time: Duration,
    pub tick: Duration,
}

impl ArgoEnv {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ArgoEnv {
            data_dir: data_dir.into(),
            sync_time: Duration::from_millis(300),
            tick: Duration::from_millis(200),
        }
    }
}

pub fn spawn(store: Arc<Store>, env: &super::LabEnv) -> tokio::task::JoinHandle<()> {
    spawn_with(store, ArgoEnv::new(&env.data_dir))
}

pub fn spawn_with(store: Arc<Store>, env: ArgoEnv) -> tokio::task::JoinHandle<()> {
    if !ops::claim_once(&store, "argocd") {
        return tokio::spawn(async {});
    }
    tokio::spawn(run(store, env))
}

/// Per app: the spec it last synced, and the running sync's end.
#[derive(Default)]
struct AppState {
    synced_spec: Option<Value>,
    sync_until: Option<Instant>,
    /// A hard refresh cleared the `argocdStaleUntilHardRefresh` fault.
    stale_cleared: bool,
}

pub async fn run(store: Arc<Store>, env: ArgoEnv) {
    let mut rx = store.subscribe();
    let mut apps: HashMap<(String, String), AppState> = HashMap::new();
    loop {
        let interest = |e: &crate::k3s::store::Event| e.group == GROUP || e.group == "apps";
        if !super::next_pass(&mut rx, env.tick.min(env.sync_time), interest).await {
            return;
        }
        pass(&store, &env, &mut apps);
    }
}

fn controller_namespaces(store: &Store) -> Vec<String> {
    ["statefulsets", "deployments"]
        .iter()
        .flat_map(|p| ops::list(store, "apps", p, None))
        .filter(|d| d["metadata"]["name"] == "argocd-application-controller")
        .filter_map(|d| d["metadata"]["namespace"].as_str().map(String::from))
        .collect()
}

fn revision(app: &Value) -> String {
    let src = if app["spec"]["source"].is_object() {
        app["spec"]["source"].clone()
    } else {
        app["spec"]["sources"].clone()
    };
    hex::encode(Sha256::digest(src.to_string().as_bytes()))[..40].to_string()
}

fn pass(store: &Store, env: &ArgoEnv, apps: &mut HashMap<(String, String), AppState>) {
    let faults = faults::load(&env.data_dir);
    for ns in controller_namespaces(store) {
        for app in ops::list(store, GROUP, "applications", Some(&ns)) {
            let name = app["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !app["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let key = (ns.clone(), name.clone());
            let st = apps.entry(key).or_default();
            let refresh = app["metadata"]["annotations"][REFRESH]
                .as_str()
                .map(String::from);
            reconcile(
                store,
                env,
                &faults,
                st,
                &ns,
                &name,
                &app,
                refresh.as_deref(),
            );
            // Upstream removes the annotation in the same write as the status that ends the
            // refresh (argo-cd controller/appcontroller.go, persistAppStatus); the lab does it
            // just after, never before, so "annotation gone" always means "status written".
            if refresh.is_some() {
                let _ = ops::modify(
                    store,
                    GROUP,
                    "applications",
                    &ns,
                    &name,
                    None,
                    MANAGER,
                    |o| {
                        if let Some(a) = o["metadata"]["annotations"].as_object_mut() {
                            a.remove(REFRESH);
                        }
                        true
                    },
                );
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn reconcile(
    store: &Store,
    env: &ArgoEnv,
    faults: &faults::Faults,
    st: &mut AppState,
    ns: &str,
    name: &str,
    app: &Value,
    refresh: Option<&str>,
) {
    let rev = revision(app);
    let compared =
        json!({"source": app["spec"]["source"], "destination": app["spec"]["destination"]});
    let t = now();
    if faults.argocd_stale(name) && !st.stale_cleared {
        if refresh == Some("hard") {
            // The manifest cache is dropped: compare and sync again below.
            st.stale_cleared = true;
            st.synced_spec = None;
            st.sync_until = None;
        } else {
            let msg = format!("rpc error: code = Unknown desc = Manifest generation error (cached): the lab's fault switch argocdStaleUntilHardRefresh holds {name}; a hard refresh regenerates the manifests");
            let _ = write_status(store, ns, name, |o| {
                let lt = o["status"]["conditions"][0]["lastTransitionTime"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or(t.clone());
                o["status"]["sync"] =
                    json!({"status": "OutOfSync", "revision": rev, "comparedTo": compared});
                o["status"]["conditions"] =
                    json!([{"type": "ComparisonError", "message": msg, "lastTransitionTime": lt}]);
                if refresh.is_some() || o["status"]["reconciledAt"].is_null() {
                    o["status"]["reconciledAt"] = json!(t);
                }
                true
            });
            return;
        }
    }
    if faults.argocd_out_of_sync(name) {
        st.sync_until = None;
        st.synced_spec = None;
        let msg = format!("one or more synchronization tasks completed unsuccessfully, reason: the lab's fault switch argocdOutOfSync holds {name} (Failed sync attempt to {rev})");
        let _ = write_status(store, ns, name, |o| {
            let prev_failed = o["status"]["operationState"]["phase"] == "Failed";
            let started = if prev_failed {
                o["status"]["operationState"]["startedAt"].clone()
            } else {
                json!(t)
            };
            let lt = o["status"]["conditions"][0]["lastTransitionTime"]
                .as_str()
                .map(String::from)
                .unwrap_or(t.clone());
            o["status"] = json!({
                "sync": {"status": "OutOfSync", "revision": rev, "comparedTo": compared},
                "health": {"status": "Degraded", "message": "sync failed"},
                "conditions": [{"type": "SyncError", "message": msg, "lastTransitionTime": lt}],
                "operationState": {"phase": "Failed", "message": msg, "startedAt": started,
                                   "finishedAt": if prev_failed { o["status"]["operationState"]["finishedAt"].clone() } else { json!(t) },
                                   "operation": {"sync": {"revision": rev}}, "retryCount": 1,
                                   "syncResult": {"revision": rev}},
                "reconciledAt": if refresh.is_some() || o["status"]["reconciledAt"].is_null() { json!(t) } else { o["status"]["reconciledAt"].clone() },
                "sourceType": "Directory",
            });
            true
        });
        return;
    }
    let spec = app["spec"].clone();
    // After a restart: an app already Synced at this revision stays Synced.
    if st.synced_spec.is_none()
        && st.sync_until.is_none()
        && app["status"]["sync"]["status"] == "Synced"
        && app["status"]["sync"]["revision"] == rev.as_str()
    {
        st.synced_spec = Some(spec.clone());
    }
    let up_to_date =
        st.synced_spec.as_ref() == Some(&spec) && app["status"]["sync"]["status"] == "Synced";
    if up_to_date {
        if refresh.is_some() {
            let _ = write_status(store, ns, name, |o| {
                o["status"]["reconciledAt"] = json!(t);
                true
            });
        }
        return;
    }
    match st.sync_until {
        None => {
            st.sync_until = Some(Instant::now() + env.sync_time);
            let _ = write_status(store, ns, name, |o| {
                o["status"] = json!({
                    "sync": {"status": "OutOfSync", "revision": rev, "comparedTo": compared},
                    "health": {"status": "Progressing"},
                    "operationState": {"phase": "Running", "message": "one or more tasks are running",
                                       "startedAt": t, "operation": {"sync": {"revision": rev}}},
                    "reconciledAt": t,
                    "sourceType": "Directory",
                });
                true
            });
        }
        Some(until) if Instant::now() >= until => {
            st.sync_until = None;
            st.synced_spec = Some(spec);
            let _ = write_status(store, ns, name, |o| {
                let started = o["status"]["operationState"]["startedAt"].clone();
                o["status"] = json!({
                    "sync": {"status": "Synced", "revision": rev, "comparedTo": compared},
                    "health": {"status": "Healthy"},
                    "operationState": {"phase": "Succeeded", "message": "successfully synced (all tasks run)",
                                       "startedAt": started, "finishedAt": t,
                                       "operation": {"sync": {"revision": rev}},
                                       "syncResult": {"revision": rev}},
                    "reconciledAt": t,
                    "sourceType": "Directory",
                });
                true
            });
        }
        Some(_) => {}
    }
}

/// A status write by the application controller (one store call, as upstream's patch).
fn write_status(
    store: &Store,
    ns: &str,
    name: &str,
    f: impl FnOnce(&mut Value) -> bool,
) -> Result<Option<Value>, crate::k3s::status::ApiError> {
    ops::modify(
        store,
        GROUP,
        "applications",
        ns,
        name,
        Some("status"),
        MANAGER,
        f,
    )
}
