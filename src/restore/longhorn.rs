//! Restoring volumes through Longhorn's API (platform-facts §2, "Wait sequence for a
//! rebuild"): make the backup target sync, find each volume's newest completed Backup, create
//! a Volume with `fromBackup`, wait until `restoreRequired` is false (a `RestoreFailure`
//! condition is fatal for that volume), then recreate its PV and PVC under the original
//! namespace and name and wait until the claim is Bound.
//!
//! Volumes are restored in parallel, at most `concurrency` at a time; one volume's failure
//! does not stop the others. Every step checks what already exists, so a rerun skips finished
//! volumes and retries only the failed ones (a faulted Volume is deleted and created again).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cluster::apply::FIELD_MANAGER;

pub const GROUP: &str = "longhorn.io";
pub const VERSION: &str = "v1beta2";
/// Label on everything the restore creates, so a rerun and the guard can tell it apart.
pub const RESTORED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "rebox");

/// How long the backup target may take to list the store's volumes once asked to sync.
const DISCOVERY_DEADLINE: Duration = Duration::from_secs(600);
/// Budget per restore: a base plus time per GiB (no documented bound upstream).
const RESTORE_BASE: Duration = Duration::from_secs(600);
const RESTORE_PER_GIB: Duration = Duration::from_secs(120);
const BIND_DEADLINE: Duration = Duration::from_secs(120);
/// Longhorn reports through CR status only (no events to wait on for progress), so the
/// restore is watched by reading the Volume at this interval.
const POLL: Duration = Duration::from_millis(250);

fn resource(kind: &str, plural: &str) -> ApiResource {
    let mut r = ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, kind));
    r.plural = plural.into();
    r
}

pub fn api(client: &Client, ns: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &resource(kind, plural))
}

/// What the restore needs of one volume.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub volume: String,
    pub namespace: Option<String>,
    pub pvc: Option<String>,
}

impl From<&super::table::Row> for Wanted {
    fn from(row: &super::table::Row) -> Wanted {
        Wanted {
            volume: row.volume.clone(),
            namespace: row.namespace.clone(),
            pvc: row.pvc.clone(),
        }
    }
}

/// The result for one volume, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub volume: String,
    pub namespace: Option<String>,
    pub pvc: Option<String>,
    pub backup: Option<String>,
    pub backup_at: Option<String>,
    /// Bytes the restored volume holds (Longhorn's `actualSize`).
    pub restored_bytes: Option<u64>,
    /// From the volume's restore slot to its PVC bound.
    pub duration_ms: u64,
    /// `restored`, `already restored` or `failed`.
    pub state: String,
    pub error: Option<String>,
}

/// The Backup a volume is restored from.
#[derive(Debug, Clone)]
struct Source {
    backup: String,
    url: String,
    size: String,
    created: Option<String>,
    storage_class: String,
}

/// Asks the backup target to read the store now (instead of at its next poll).
pub async fn request_sync(client: &Client, ns: &str) -> Result<()> {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    api(client, ns, "BackupTarget", "backuptargets")
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"syncRequestedAt": now}})),
        )
        .await
        .context("asking Longhorn's backup target to sync")?;
    Ok(())
}

/// Waits until the backup target is available and every wanted volume has a BackupVolume whose
/// newest Backup is Completed. Returns each volume's source.
async fn discover(
    client: &Client,
    ns: &str,
    wanted: &[Wanted],
) -> Result<Vec<(Wanted, Result<Source>)>> {
    let deadline = tokio::time::Instant::now() + DISCOVERY_DEADLINE;
    let targets = api(client, ns, "BackupTarget", "backuptargets");
    let bvs = api(client, ns, "BackupVolume", "backupvolumes");
    let backups = api(client, ns, "Backup", "backups");
    loop {
        let target = targets.get_opt("default").await?;
        let available = target
            .as_ref()
            .is_some_and(|t| t.data["status"]["available"] == true);
        if available {
            let listed = bvs.list(&ListParams::default()).await?;
            let mut found = Vec::new();
            for w in wanted {
                // Select by spec/label, never by the (hashed) name.
                let bv = listed.items.iter().find(|b| {
                    b.data["spec"]["volumeName"] == w.volume.as_str()
                        || b.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("backup-volume"))
                            == Some(&w.volume)
                });
                let Some(bv) = bv else { break };
                let last = bv.data["status"]["lastBackupName"]
                    .as_str()
                    .unwrap_or_default();
                if last.is_empty() {
                    found.push((
                        w.clone(),
                        Err(anyhow!("Longhorn lists no completed backup")),
                    ));
                    continue;
                }
                let Some(b) = backups.get_opt(last).await? else {
                    break;
                };
                if b.data["status"]["state"] != "Completed" {
                    found.push((
                        w.clone(),
                        Err(anyhow!(
                            "its newest backup {last} is {}, not Completed",
                            b.data["status"]["state"]
                        )),
                    ));
                    continue;
                }
                let s = &b.data["status"];
                found.push((
                    w.clone(),
                    Ok(Source {
                        backup: last.to_string(),
                        url: s["url"].as_str().unwrap_or_default().to_string(),
                        size: s["volumeSize"].as_str().unwrap_or_default().to_string(),
                        created: s["backupCreatedAt"].as_str().map(String::from),
                        storage_class: bv.data["status"]["storageClassName"]
                            .as_str()
                            .filter(|c| !c.is_empty())
                            .unwrap_or("longhorn-static")
                            .to_string(),
                    }),
                ));
            }
            if found.len() == wanted.len() {
                return Ok(found);
            }
        }
        if tokio::time::Instant::now() > deadline {
            let state = target
                .map(|t| t.data["status"].to_string())
                .unwrap_or_else(|| "BackupTarget default does not exist".into());
            bail!(crate::next::hinted(format!("Longhorn did not list the NAS's volumes within {}s (backup target: {state})", DISCOVERY_DEADLINE.as_secs()), format!("`kubectl -n {ns} get backuptargets,backupvolumes` on the server; check nas.backup_target")));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A Volume's restore state, read from its status.
#[derive(Debug, PartialEq)]
enum Progress {
    Missing,
    Restoring(Option<u8>),
    Done { actual_size: Option<u64> },
    Failed(String),
}

fn progress(v: Option<&DynamicObject>) -> Progress {
    let Some(v) = v else {
        return Progress::Missing;
    };
    let s = &v.data["status"];
    let restore = s["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Restore"));
    if let Some(c) = restore.filter(|c| c["reason"] == "RestoreFailure") {
        return Progress::Failed(
            c["message"]
                .as_str()
                .unwrap_or("restore failed")
                .to_string(),
        );
    }
    if s["robustness"] == "faulted" {
        return Progress::Failed("the volume is faulted".into());
    }
    if s["restoreInitiated"] == true && s["restoreRequired"] == false {
        return Progress::Done {
            actual_size: s["actualSize"].as_u64(),
        };
    }
    // Longhorn's Volume carries no progress field; the lab's stand-in (and a message like
    // "restored 40%") gives one, otherwise the bar shows the state only.
    let pct = restore
        .and_then(|c| c["message"].as_str())
        .and_then(|m| m.rsplit_once("restored "))
        .and_then(|(_, p)| p.trim_end_matches('%').parse().ok());
    Progress::Restoring(pct)
}

fn labels() -> Value {
    json!({ RESTORED_BY.0: RESTORED_BY.1 })
}

async fn wait_volume(
    vols: &Api<DynamicObject>,
    name: &str,
    budget: Duration,
    bar: &ProgressBar,
) -> Result<Option<u64>> {
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        match progress(vols.get_opt(name).await?.as_ref()) {
            Progress::Done { actual_size } => return Ok(actual_size),
            Progress::Failed(msg) => bail!("{msg}"),
            Progress::Missing => bail!("the Volume disappeared during its restore"),
            Progress::Restoring(pct) => {
                if let Some(p) = pct {
                    bar.set_position(p as u64);
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(crate::next::hinted(format!("still restoring after {}s", budget.as_secs()), format!("`kubectl -n longhorn-system describe volume {name}` on the server; rerun to keep waiting")));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Restores one volume (or confirms an earlier run did) and recreates its PV and PVC.
async fn restore_one(
    client: &Client,
    ns: &str,
    replicas: u32,
    w: &Wanted,
    src: &Source,
    bar: &ProgressBar,
) -> Result<(Option<u64>, bool)> {
    let vols = api(client, ns, "Volume", "volumes");
    let mut already = false;
    match progress(vols.get_opt(&w.volume).await?.as_ref()) {
        Progress::Failed(_) => {
            // An earlier attempt faulted: start that volume over.
            bar.set_message(format!("{}: deleting the failed attempt", w.volume));
            vols.delete(&w.volume, &DeleteParams::default()).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while vols.get_opt(&w.volume).await?.is_some() {
                if tokio::time::Instant::now() > deadline {
                    bail!("the failed Volume {} was not deleted within 120s", w.volume);
                }
                tokio::time::sleep(POLL).await;
            }
            create_volume(&vols, w, src, replicas).await?;
        }
        Progress::Missing => create_volume(&vols, w, src, replicas).await?,
        Progress::Done { .. } => already = true,
        Progress::Restoring(_) => {}
    }
    bar.set_message(format!("{}: restoring {}", w.volume, src.backup));
    let gib = src.size.parse::<u64>().unwrap_or(0) / (1 << 30);
    let budget = RESTORE_BASE + RESTORE_PER_GIB * gib as u32;
    let actual = wait_volume(&vols, &w.volume, budget, bar).await?;
    bar.set_position(100);
    if let (Some(pvc_ns), Some(pvc)) = (&w.namespace, &w.pvc) {
        bar.set_message(format!("{}: binding {pvc_ns}/{pvc}", w.volume));
        bind(client, w, pvc_ns, pvc, src, replicas).await?;
    }
    Ok((actual, already))
}

async fn create_volume(
    vols: &Api<DynamicObject>,
    w: &Wanted,
    src: &Source,
    replicas: u32,
) -> Result<()> {
    let mut obj = DynamicObject::new(&w.volume, &resource("Volume", "volumes"));
    obj.metadata.labels = serde_json::from_value(labels()).ok();
    obj.data = json!({
        "spec": {
            "fromBackup": src.url,
            "size": src.size,
            "numberOfReplicas": replicas,
            "frontend": "blockdev",
            "dataEngine": "v1",
            "accessMode": "rwo",
        }
    });
    vols.create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating Longhorn Volume {} from {}", w.volume, src.backup))?;
    Ok(())
}

/// The PV (named after the volume, as Longhorn's "Create PV/PVC" does) and the PVC under its
/// original namespace and name, bound to each other.
async fn bind(
    client: &Client,
    w: &Wanted,
    pvc_ns: &str,
    pvc: &str,
    src: &Source,
    replicas: u32,
) -> Result<()> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            pvc_ns,
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": pvc_ns},
            })),
        )
        .await
        .with_context(|| format!("creating namespace {pvc_ns}"))?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    pvs.patch(
        &w.volume,
        &pp,
        &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": w.volume, "labels": labels()},
            "spec": {
                "capacity": {"storage": src.size},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": src.storage_class,
                "volumeMode": "Filesystem",
                "csi": {
                    "driver": "driver.longhorn.io",
                    "fsType": "ext4",
                    "volumeHandle": w.volume,
                    "volumeAttributes": {
                        "numberOfReplicas": replicas.to_string(),
                        "staleReplicaTimeout": "30",
                    },
                },
            },
        })),
    )
    .await
    .with_context(|| format!("creating PersistentVolume {}", w.volume))?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), pvc_ns);
    if let Some(existing) = pvcs.get_opt(pvc).await? {
        let bound_to = existing.spec.as_ref().and_then(|s| s.volume_name.clone());
        if bound_to.as_deref().is_some_and(|v| v != w.volume) {
            bail!(crate::next::hinted(format!("PVC {pvc_ns}/{pvc} already exists, bound to {}; it would not get the restored data", bound_to.unwrap_or_default()), "delete that PVC (it is not the restored one) and rerun"));
        }
    }
    pvcs.patch(
        pvc,
        &pp,
        &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": pvc, "namespace": pvc_ns, "labels": labels()},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": src.size}},
                "storageClassName": src.storage_class,
                "volumeMode": "Filesystem",
                "volumeName": w.volume,
            },
        })),
    )
    .await
    .with_context(|| format!("creating PersistentVolumeClaim {pvc_ns}/{pvc}"))?;
    let bound =
        kube::runtime::wait::await_condition(pvcs, pvc, |c: Option<&PersistentVolumeClaim>| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| s.phase.as_deref())
                == Some("Bound")
        });
    tokio::time::timeout(BIND_DEADLINE, bound)
        .await
        .map_err(|_| {
            anyhow!(crate::next::hinted(
                format!(
                    "PVC {pvc_ns}/{pvc} did not bind to PV {} within {}s",
                    w.volume,
                    BIND_DEADLINE.as_secs()
                ),
                format!("`kubectl -n {pvc_ns} describe pvc {pvc}` on the server")
            ))
        })?
        .with_context(|| format!("watching PVC {pvc_ns}/{pvc}"))?;
    Ok(())
}

/// Whether the volume is restored and its claim bound (a rerun's check).
pub async fn is_restored(client: &Client, ns: &str, w: &Wanted) -> Result<bool> {
    let vols = api(client, ns, "Volume", "volumes");
    if !matches!(
        progress(vols.get_opt(&w.volume).await?.as_ref()),
        Progress::Done { .. }
    ) {
        return Ok(false);
    }
    let (Some(pvc_ns), Some(pvc)) = (&w.namespace, &w.pvc) else {
        return Ok(true);
    };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), pvc_ns);
    Ok(pvcs.get_opt(pvc).await?.is_some_and(|c| {
        c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(w.volume.as_str())
            && c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
    }))
}

/// What Longhorn reports about volumes restored by an earlier run (for its report).
pub async fn observed(client: &Client, ns: &str, wanted: &[Wanted]) -> Vec<Outcome> {
    let vols = api(client, ns, "Volume", "volumes");
    let mut out = Vec::new();
    for w in wanted {
        let v = vols.get_opt(&w.volume).await.ok().flatten();
        let s = v
            .as_ref()
            .map(|v| v.data["status"].clone())
            .unwrap_or_default();
        let state = match progress(v.as_ref()) {
            Progress::Done { .. } => "restored earlier",
            Progress::Failed(_) => "failed",
            Progress::Missing => "missing",
            Progress::Restoring(_) => "restoring",
        };
        out.push(Outcome {
            volume: w.volume.clone(),
            namespace: w.namespace.clone(),
            pvc: w.pvc.clone(),
            backup: s["lastBackup"].as_str().map(String::from),
            backup_at: s["lastBackupAt"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(String::from),
            restored_bytes: s["actualSize"].as_u64(),
            duration_ms: 0,
            state: state.into(),
            error: None,
        });
    }
    out
}

/// Restores every wanted volume, `concurrency` at a time, one progress bar each.
pub async fn restore_all(
    client: &Client,
    ns: &str,
    replicas: u32,
    wanted: &[Wanted],
    concurrency: usize,
) -> Result<Vec<Outcome>> {
    request_sync(client, ns).await?;
    let sources = discover(client, ns, wanted).await?;
    let bars = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        MultiProgress::new()
    } else {
        MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
    };
    let style = ProgressStyle::with_template("  {msg:<60} [{bar:25}] {pos:>3}% {elapsed}")
        .expect("static template")
        .progress_chars("=> ");
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (w, src) in sources {
        let bar = bars.add(ProgressBar::new(100));
        bar.set_style(style.clone());
        bar.set_message(format!("{}: waiting for a slot", w.volume));
        let (client, ns, permits) = (client.clone(), ns.to_string(), permits.clone());
        tasks.spawn(async move {
            let mut started = std::time::Instant::now();
            let mut outcome = Outcome {
                volume: w.volume.clone(),
                namespace: w.namespace.clone(),
                pvc: w.pvc.clone(),
                backup: src.as_ref().ok().map(|s| s.backup.clone()),
                backup_at: src.as_ref().ok().and_then(|s| s.created.clone()),
                restored_bytes: None,
                duration_ms: 0,
                state: "failed".into(),
                error: None,
            };
            let result = match &src {
                Err(e) => Err(anyhow!("{e:#}")),
                Ok(src) => {
                    let _permit = permits.acquire().await.expect("never closed");
                    // A volume's own time starts when it gets its slot.
                    started = std::time::Instant::now();
                    restore_one(&client, &ns, replicas, &w, src, &bar).await
                }
            };
            outcome.duration_ms = started.elapsed().as_millis() as u64;
            match result {
                Ok((bytes, already)) => {
                    outcome.restored_bytes = bytes;
                    outcome.state = if already {
                        "already restored"
                    } else {
                        "restored"
                    }
                    .into();
                    bar.finish_with_message(format!("{}: {}", w.volume, outcome.state));
                }
                Err(e) => {
                    outcome.error = Some(crate::next::describe(&e));
                    bar.abandon_with_message(format!("{}: FAILED", w.volume));
                }
            }
            eprintln!(
                "  volume {:<28} {} in {:.2}s{}",
                w.volume,
                outcome.state,
                outcome.duration_ms as f64 / 1000.0,
                outcome
                    .error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
            outcome
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        outcomes.push(done.context("a restore task panicked")?);
    }
    outcomes.sort_by(|a, b| a.volume.cmp(&b.volume));
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(status: Value) -> DynamicObject {
        let mut o = DynamicObject::new("v", &resource("Volume", "volumes"));
        o.data = json!({ "status": status });
        o
    }

    #[test]
    fn restore_progress_is_read_from_the_volume_status() {
        assert_eq!(progress(None), Progress::Missing);
        let running = vol(json!({"restoreInitiated": true, "restoreRequired": true,
            "conditions": [{"type": "Restore", "status": "True", "reason": "RestoreInProgress", "message": "restoring backup b: restored 40%"}]}));
        assert_eq!(progress(Some(&running)), Progress::Restoring(Some(40)));
        let done = vol(
            json!({"restoreInitiated": true, "restoreRequired": false, "actualSize": 5,
            "conditions": [{"type": "Restore", "status": "False", "reason": ""}]}),
        );
        assert_eq!(
            progress(Some(&done)),
            Progress::Done {
                actual_size: Some(5)
            }
        );
        let failed = vol(
            json!({"restoreInitiated": true, "restoreRequired": true, "robustness": "faulted",
            "conditions": [{"type": "Restore", "status": "False", "reason": "RestoreFailure", "message": "All replica restore failed"}]}),
        );
        assert!(
            matches!(progress(Some(&failed)), Progress::Failed(m) if m.contains("All replica"))
        );
        // A volume that never started restoring is not done, whatever restoreRequired says.
        let fresh = vol(json!({"restoreInitiated": false, "restoreRequired": false}));
        assert_eq!(progress(Some(&fresh)), Progress::Restoring(None));
    }
}
