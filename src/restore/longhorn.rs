//! Restoring volumes through Longhorn's API (platform-facts §2, "Wait sequence for a
//! rebuild", and "Upstream order of events"): wait for BackupTarget `default` (Longhorn's
//! manager makes it only once it runs, after the chart's install Job has completed), ask it to
//! sync, wait until each volume's BackupVolume names its newest backup and that Backup is
//! Completed (longhorn-manager v1.11.3 creates BackupVolumes and Backups first without status,
//! and fills them in later, one backupstore call at a time: "no status yet" is "not synced
//! yet"), create a Volume with `fromBackup`, wait until `restoreRequired` is false (a
//! `RestoreFailure` condition is fatal for that volume), then recreate its PV and PVC under
//! the original namespace and name and wait until the claim is Bound. Every wait is
//! [`wait::until`]: a deadline from `[restore]` in rebox.toml, the last state seen in its
//! error.
//!
//! Volumes come back as they were: the access mode from the backup's
//! `longhorn.io/volume-access-mode` label (else Longhorn's default `rwo`, as its volume
//! mutator does: `webhook/resources/volume/mutator.go`), their own recurring jobs and groups
//! (`restoreVolumeRecurringJob: enabled`; Longhorn skips a volume for recurring jobs while it
//! restores, `app/recurringjob/util.go`), the filesystem of their StorageClass when that
//! class exists with a `fsType` (Longhorn's backups record no filesystem), else ext4
//! (Longhorn's own default for a PV, `manager/kubernetes.go`).
//!
//! Volumes are restored in parallel, at most `concurrency` at a time; one volume's failure
//! does not stop the others. Every step checks what already exists, so a rerun skips finished
//! volumes and retries only the failed ones (a faulted Volume is deleted and created again).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::{json, Value};

use super::wait::{self, Look};
use crate::cluster::apply::FIELD_MANAGER;

pub const GROUP: &str = "longhorn.io";
pub const VERSION: &str = "v1beta2";
/// Label on everything the restore creates, so a rerun and the guard can tell it apart.
pub const RESTORED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "rebox");
/// The backup label with the source volume's access mode (longhorn-manager
/// `types.LonghornLabelVolumeAccessMode` under the `longhorn.io/` prefix).
pub const ACCESS_MODE_LABEL: &str = "longhorn.io/volume-access-mode";
/// Longhorn's default access mode, and the PV filesystem it assumes.
pub const DEFAULT_ACCESS_MODE: &str = "rwo";
pub const DEFAULT_FS_TYPE: &str = "ext4";

/// How long each wait of the restore may take (`[restore]` in rebox.toml).
#[derive(Debug, Clone)]
pub struct Deadlines {
    pub backup_target: Duration,
    pub discovery: Duration,
    pub restore_base: Duration,
    pub restore_per_gib: Duration,
    pub bind: Duration,
}

impl From<&crate::config::Restore> for Deadlines {
    fn from(r: &crate::config::Restore) -> Deadlines {
        let s = Duration::from_secs;
        Deadlines {
            backup_target: s(r.backup_target_timeout_secs),
            discovery: s(r.discovery_timeout_secs),
            restore_base: s(r.restore_base_secs),
            restore_per_gib: s(r.restore_secs_per_gib),
            bind: s(r.bind_timeout_secs),
        }
    }
}

impl Default for Deadlines {
    fn default() -> Deadlines {
        Deadlines::from(&crate::config::Restore::default())
    }
}

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
    /// Longhorn access mode it was restored with (`rwo`, `rwx`, `rwop`).
    pub access_mode: Option<String>,
    /// The filesystem its PV names, and where that came from.
    pub fs_type: Option<String>,
    /// Bytes the restored volume holds (Longhorn's `actualSize`).
    pub restored_bytes: Option<u64>,
    /// From the volume's restore slot to its PVC bound.
    pub duration_ms: u64,
    /// `restored`, `already restored` or `failed`.
    pub state: String,
    pub error: Option<String>,
}

/// The Backup a volume is restored from.
#[derive(Debug, Clone, PartialEq)]
struct Source {
    backup: String,
    url: String,
    size: String,
    created: Option<String>,
    storage_class: String,
    /// Longhorn's access mode (`rwo`, `rwx`, `rwop`).
    access_mode: String,
    fs_type: String,
}

/// The Kubernetes access mode of a Longhorn one.
fn k8s_access_mode(longhorn: &str) -> &'static str {
    match longhorn {
        "rwx" => "ReadWriteMany",
        "rwop" => "ReadWriteOncePod",
        _ => "ReadWriteOnce",
    }
}

fn timestamp(t: time::OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn parse_time(v: &Value) -> Option<time::OffsetDateTime> {
    v.as_str().and_then(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    })
}

/// What the longhorn-manager pods report, for a wait's "last seen".
async fn manager_state(client: &Client, ns: &str) -> String {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels("app=longhorn-manager");
    match pods.list(&lp).await {
        Ok(l) if l.items.is_empty() => "no longhorn-manager pod yet".into(),
        Ok(l) => l
            .items
            .iter()
            .map(|p| {
                let s = p.status.as_ref();
                let waiting = s
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.iter().find_map(|c| c.state.as_ref()?.waiting.as_ref()))
                    .and_then(|w| w.reason.clone());
                let ready = s
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                format!(
                    "pod {} {}{}",
                    p.metadata.name.clone().unwrap_or_default(),
                    s.and_then(|s| s.phase.clone())
                        .unwrap_or_else(|| "Pending".into()),
                    match (ready, waiting) {
                        (true, _) => ", Ready".to_string(),
                        (false, Some(w)) => format!(", {w}"),
                        (false, None) => ", not Ready".to_string(),
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("pods not readable: {e}"),
    }
}

/// The API server's time of `manager`'s last write to `obj` (its managedFields entry): the
/// server's clock, which Longhorn's comparisons use, not the laptop's.
fn server_time_of_write(obj: &DynamicObject, manager: &str) -> Option<time::OffsetDateTime> {
    obj.metadata
        .managed_fields
        .as_ref()?
        .iter()
        .filter(|m| m.manager.as_deref() == Some(manager))
        .filter_map(|m| m.time.as_ref())
        .map(|t| t.0.as_second())
        .max()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
}

/// Waits for BackupTarget `default` (longhorn-manager makes it from the chart's
/// `longhorn-default-resource` once it runs), then asks it to read the store now instead of
/// at its next poll (`spec.syncRequestedAt`, which Longhorn compares with its
/// `status.lastSyncedAt`). Returns the request's time on the server's clock, in whole
/// seconds as Longhorn stores them: a laptop whose clock is off must not make the request
/// look older than the last sync (ignored) or newer than every sync to come.
pub async fn request_sync(
    client: &Client,
    ns: &str,
    deadline: Duration,
) -> Result<time::OffsetDateTime> {
    let targets = api(client, ns, "BackupTarget", "backuptargets");
    let targets_ref = &targets;
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    let pp_ref = &pp;
    let ask = |at: time::OffsetDateTime| async move {
        targets_ref
            .patch(
                "default",
                pp_ref,
                &Patch::Merge(json!({"spec": {"syncRequestedAt": timestamp(at)}})),
            )
            .await
    };
    let ask_ref = &ask;
    wait::until(
        "Longhorn's BackupTarget default (its manager makes it once it runs)",
        deadline,
        std::slice::from_ref(&targets),
        &format!("`kubectl -n {ns} get pods,backuptargets` on the server: the longhorn-manager pod must be Running (image pulls on a slow uplink take long; [restore] backup_target_timeout_secs)"),
        || async move {
            let laptop = time::OffsetDateTime::now_utc();
            let patched = match ask_ref(laptop).await {
                Ok(o) => o,
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    return Ok(Look::NotYet(format!(
                        "BackupTarget default does not exist yet ({})",
                        manager_state(client, ns).await
                    )))
                }
                Err(e) => {
                    return Err(
                        anyhow::Error::new(e).context("asking Longhorn's backup target to sync")
                    )
                }
            };
            let Some(server) = server_time_of_write(&patched, FIELD_MANAGER) else {
                return Ok(Look::Ready(laptop.replace_nanosecond(0).unwrap_or(laptop)));
            };
            if (server - laptop).abs() > time::Duration::seconds(1) {
                tracing::info!(
                    "the server's clock is {}s off the laptop's: asking again in its time",
                    (server - laptop).whole_seconds()
                );
                ask_ref(server)
                    .await
                    .context("asking Longhorn's backup target to sync")?;
            }
            Ok(Look::Ready(server))
        },
    )
    .await
}

/// What Longhorn says of one wanted volume so far.
fn look_volume(
    w: &Wanted,
    bvs: &[DynamicObject],
    backups: &[DynamicObject],
    classes: &[StorageClass],
) -> Look<Source> {
    // Select by spec/label, never by the (hashed) name.
    let bv = bvs.iter().find(|b| {
        b.data["spec"]["volumeName"] == w.volume.as_str()
            || b.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("backup-volume"))
                == Some(&w.volume)
    });
    let Some(bv) = bv else {
        return Look::NotYet("no BackupVolume yet".into());
    };
    let bvs = &bv.data["status"];
    if bvs["lastSyncedAt"].as_str().is_none_or(str::is_empty) {
        return Look::NotYet("its BackupVolume is not synced yet (no status)".into());
    }
    let last = bvs["lastBackupName"].as_str().unwrap_or_default();
    if last.is_empty() {
        return Look::NotYet(
            "its BackupVolume names no last backup (the NAS's volume.cfg does)".into(),
        );
    }
    let Some(b) = backups
        .iter()
        .find(|b| b.metadata.name.as_deref() == Some(last))
    else {
        return Look::NotYet(format!("no Backup {last} yet"));
    };
    let s = &b.data["status"];
    match s["state"].as_str().unwrap_or_default() {
        "Completed" => {}
        "" => return Look::NotYet(format!("Backup {last} is not synced yet (no state)")),
        "Error" | "Unknown" => {
            return Look::Failed(anyhow!(
                "its newest backup {last} is {}: {}",
                s["state"],
                s["error"].as_str().unwrap_or("no error given")
            ))
        }
        other => return Look::NotYet(format!("Backup {last} is {other}")),
    }
    let (url, size) = (
        s["url"].as_str().unwrap_or_default(),
        s["volumeSize"].as_str().unwrap_or_default(),
    );
    if url.is_empty() || size.is_empty() {
        return Look::NotYet(format!("Backup {last} has no url or volumeSize yet"));
    }
    let access_mode = [&s["labels"], &b.data["spec"]["labels"], &bvs["labels"]]
        .iter()
        .find_map(|l| l[ACCESS_MODE_LABEL].as_str())
        .filter(|m| matches!(*m, "rwo" | "rwx" | "rwop"))
        .unwrap_or(DEFAULT_ACCESS_MODE)
        .to_string();
    let storage_class = bvs["storageClassName"]
        .as_str()
        .filter(|c| !c.is_empty())
        .unwrap_or("longhorn-static")
        .to_string();
    let fs_type = classes
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(storage_class.as_str()))
        .and_then(|c| c.parameters.as_ref()?.get("fsType").cloned())
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| DEFAULT_FS_TYPE.to_string());
    Look::Ready(Source {
        backup: last.to_string(),
        url: url.to_string(),
        size: size.to_string(),
        created: s["backupCreatedAt"].as_str().map(String::from),
        storage_class,
        access_mode,
        fs_type,
    })
}

/// Waits until the backup target is available and has synced since `requested`, and every
/// wanted volume has a synced BackupVolume whose newest Backup is Completed. Returns each
/// volume's source; at the deadline, the volumes still not there fail with what Longhorn
/// said of them last (the others go on).
async fn discover(
    client: &Client,
    ns: &str,
    wanted: &[Wanted],
    requested: time::OffsetDateTime,
    deadline: Duration,
) -> Result<Vec<(Wanted, Result<Source>)>> {
    let targets = api(client, ns, "BackupTarget", "backuptargets");
    let bvs = api(client, ns, "BackupVolume", "backupvolumes");
    let backups = api(client, ns, "Backup", "backups");
    let classes: Api<StorageClass> = Api::all(client.clone());
    let (targets_ref, bvs_ref, backups_ref, classes_ref) = (&targets, &bvs, &backups, &classes);
    let started = tokio::time::Instant::now();
    let next = format!("`kubectl -n {ns} get backuptargets,backupvolumes,backups` on the server; check nas.backup_target; a slow NAS may need a longer [restore] discovery_timeout_secs");
    // The target first: nothing below means anything until it has read the store.
    wait::until(
        "Longhorn's backup target to read the NAS",
        deadline,
        std::slice::from_ref(&targets),
        &next,
        || async move {
            let Some(t) = targets_ref.get_opt("default").await? else {
                return Ok(Look::NotYet("BackupTarget default is gone".into()));
            };
            let st = &t.data["status"];
            if st["available"] != true {
                let why = st["conditions"]
                    .as_array()
                    .and_then(|c| {
                        c.iter()
                            .find(|c| c["type"] == "Unavailable" && c["status"] == "True")
                    })
                    .and_then(|c| c["message"].as_str())
                    .map(|m| format!("unavailable: {m}"))
                    .unwrap_or_else(|| "not available yet".into());
                return Ok(Look::NotYet(format!("the backup target is {why}")));
            }
            Ok(match parse_time(&st["lastSyncedAt"]) {
                Some(t) if t >= requested => Look::Ready(()),
                Some(t) => Look::NotYet(format!(
                    "last synced at {}, before the sync asked for at {}",
                    timestamp(t),
                    timestamp(requested)
                )),
                None => Look::NotYet("available, not synced yet".into()),
            })
        },
    )
    .await?;
    let left = deadline.saturating_sub(started.elapsed());
    let last: std::sync::Mutex<Vec<Look<Source>>> = std::sync::Mutex::new(Vec::new());
    let last_ref = &last;
    let all = wait::until(
        &format!(
            "Longhorn to list the {} volume(s) and their newest Completed backups",
            wanted.len()
        ),
        left,
        &[bvs.clone(), backups.clone()],
        &next,
        || async move {
            let listed = bvs_ref.list(&ListParams::default()).await?.items;
            let found = backups_ref.list(&ListParams::default()).await?.items;
            let sc = classes_ref
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            let looks: Vec<Look<Source>> = wanted
                .iter()
                .map(|w| look_volume(w, &listed, &found, &sc))
                .collect();
            let waiting: Vec<String> = wanted
                .iter()
                .zip(&looks)
                .filter_map(|(w, l)| match l {
                    Look::NotYet(s) => Some(format!("{}: {s}", w.volume)),
                    _ => None,
                })
                .collect();
            *last_ref.lock().unwrap_or_else(|e| e.into_inner()) = looks;
            Ok(if waiting.is_empty() {
                Look::Ready(())
            } else {
                Look::NotYet(format!(
                    "{} of {} not there yet ({})",
                    waiting.len(),
                    wanted.len(),
                    waiting.join("; ")
                ))
            })
        },
    )
    .await;
    let last = last.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = all {
        if last.is_empty() {
            return Err(e); // the listing itself never answered
        }
    }
    let timeout = deadline.as_secs();
    Ok(wanted
        .iter()
        .cloned()
        .zip(last)
        .map(|(w, l)| {
            let r = match l {
                Look::Ready(s) => Ok(s),
                Look::Failed(e) => Err(e),
                Look::NotYet(seen) => Err(anyhow!(crate::next::hinted(
                    format!("Longhorn did not list its newest Completed backup within {timeout}s; last seen: {seen}"),
                    next.clone()
                ))),
            };
            (w, r)
        })
        .collect())
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
    wait::until_silent(
        &format!("the restore of {name}"),
        budget,
        std::slice::from_ref(vols),
        &format!("`kubectl -n {} describe volume {name}` on the server; rerun to keep waiting (or raise [restore] restore_base_secs / restore_secs_per_gib)", vols.namespace().unwrap_or("longhorn-system")),
        || async move {
            Ok(match progress(vols.get_opt(name).await?.as_ref()) {
                Progress::Done { actual_size } => Look::Ready(actual_size),
                Progress::Failed(msg) => Look::Failed(anyhow!("{msg}")),
                Progress::Missing => {
                    Look::Failed(anyhow!("the Volume disappeared during its restore"))
                }
                Progress::Restoring(pct) => {
                    if let Some(p) = pct {
                        bar.set_position(p as u64);
                    }
                    Look::NotYet(match pct {
                        Some(p) => format!("restoring, {p}%"),
                        None => "restoring".into(),
                    })
                }
            })
        },
    )
    .await
}

/// Restores one volume (or confirms an earlier run did) and recreates its PV and PVC.
async fn restore_one(
    client: &Client,
    ns: &str,
    replicas: u32,
    w: &Wanted,
    src: &Source,
    deadlines: &Deadlines,
    bar: &ProgressBar,
) -> Result<(Option<u64>, bool)> {
    let vols = api(client, ns, "Volume", "volumes");
    let mut already = false;
    match progress(vols.get_opt(&w.volume).await?.as_ref()) {
        Progress::Failed(_) => {
            // An earlier attempt faulted: start that volume over.
            bar.set_message(format!("{}: deleting the failed attempt", w.volume));
            vols.delete(&w.volume, &DeleteParams::default()).await?;
            let vols_ref = &vols;
            wait::until_silent(
                &format!("the failed Volume {} to be deleted", w.volume),
                Duration::from_secs(120),
                std::slice::from_ref(&vols),
                &format!(
                    "`kubectl -n {ns} describe volume {}` on the server",
                    w.volume
                ),
                || async move {
                    Ok(match vols_ref.get_opt(&w.volume).await? {
                        None => Look::Ready(()),
                        Some(v) => Look::NotYet(format!(
                            "still there (deletionTimestamp {})",
                            v.metadata
                                .deletion_timestamp
                                .map(|t| t.0.to_string())
                                .unwrap_or_else(|| "unset".into())
                        )),
                    })
                },
            )
            .await?;
            create_volume(&vols, w, src, replicas).await?;
        }
        Progress::Missing => create_volume(&vols, w, src, replicas).await?,
        Progress::Done { .. } => already = true,
        Progress::Restoring(_) => {}
    }
    bar.set_message(format!("{}: restoring {}", w.volume, src.backup));
    let budget = wait::budget(
        deadlines.restore_base,
        deadlines.restore_per_gib,
        src.size.parse::<u64>().unwrap_or(0),
    );
    let actual = wait_volume(&vols, &w.volume, budget, bar).await?;
    bar.set_position(100);
    if let (Some(pvc_ns), Some(pvc)) = (&w.namespace, &w.pvc) {
        bar.set_message(format!("{}: binding {pvc_ns}/{pvc}", w.volume));
        bind(client, w, pvc_ns, pvc, src, replicas, deadlines.bind).await?;
    }
    Ok((actual, already))
}

/// The Volume of a restore: as the source was (access mode, recurring jobs), from its
/// newest backup.
fn volume_object(w: &Wanted, src: &Source, replicas: u32) -> DynamicObject {
    let mut obj = DynamicObject::new(&w.volume, &resource("Volume", "volumes"));
    obj.metadata.labels = serde_json::from_value(labels()).ok();
    obj.data = json!({
        "spec": {
            "fromBackup": src.url,
            "size": src.size,
            "numberOfReplicas": replicas,
            "frontend": "blockdev",
            "dataEngine": "v1",
            "accessMode": src.access_mode,
            // The volume's own recurring jobs and groups (kept in the backup volume's
            // VolumeRecurringJobInfo) come back with it, whatever the global setting
            // `restore-volume-recurring-jobs` says (default false).
            "restoreVolumeRecurringJob": "enabled",
        }
    });
    obj
}

async fn create_volume(
    vols: &Api<DynamicObject>,
    w: &Wanted,
    src: &Source,
    replicas: u32,
) -> Result<()> {
    vols.create(&PostParams::default(), &volume_object(w, src, replicas))
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
    deadline: Duration,
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
    let mode = k8s_access_mode(&src.access_mode);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    pvs.patch(
        &w.volume,
        &pp,
        &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": w.volume, "labels": labels()},
            "spec": {
                "capacity": {"storage": src.size},
                "accessModes": [mode],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": src.storage_class,
                "volumeMode": "Filesystem",
                "csi": {
                    "driver": "driver.longhorn.io",
                    "fsType": src.fs_type,
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
                "accessModes": [mode],
                "resources": {"requests": {"storage": src.size}},
                "storageClassName": src.storage_class,
                "volumeMode": "Filesystem",
                "volumeName": w.volume,
            },
        })),
    )
    .await
    .with_context(|| format!("creating PersistentVolumeClaim {pvc_ns}/{pvc}"))?;
    let watched: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        pvc_ns,
        &ApiResource::erase::<PersistentVolumeClaim>(&()),
    );
    let pvcs_ref = &pvcs;
    wait::until_silent(
        &format!("PVC {pvc_ns}/{pvc} to bind to PV {}", w.volume),
        deadline,
        &[watched],
        &format!("`kubectl -n {pvc_ns} describe pvc {pvc}` on the server"),
        || async move {
            let c = pvcs_ref.get_opt(pvc).await?;
            let phase = c
                .as_ref()
                .and_then(|c| c.status.as_ref())
                .and_then(|s| s.phase.clone());
            Ok(match phase.as_deref() {
                Some("Bound") => Look::Ready(()),
                Some(p) => Look::NotYet(format!("the PVC is {p}")),
                None if c.is_none() => Look::NotYet("the PVC does not exist".into()),
                None => Look::NotYet("the PVC has no phase yet".into()),
            })
        },
    )
    .await
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
            access_mode: v
                .as_ref()
                .and_then(|v| v.data["spec"]["accessMode"].as_str())
                .map(String::from),
            fs_type: None,
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
    deadlines: &Deadlines,
) -> Result<Vec<Outcome>> {
    let requested = request_sync(client, ns, deadlines.backup_target).await?;
    let sources = discover(client, ns, wanted, requested, deadlines.discovery).await?;
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
        let deadlines = deadlines.clone();
        tasks.spawn(async move {
            let mut started = std::time::Instant::now();
            let mut outcome = Outcome {
                volume: w.volume.clone(),
                namespace: w.namespace.clone(),
                pvc: w.pvc.clone(),
                backup: src.as_ref().ok().map(|s| s.backup.clone()),
                backup_at: src.as_ref().ok().and_then(|s| s.created.clone()),
                access_mode: src.as_ref().ok().map(|s| s.access_mode.clone()),
                fs_type: src.as_ref().ok().map(|s| s.fs_type.clone()),
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
                    restore_one(&client, &ns, replicas, &w, src, &deadlines, &bar).await
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

    fn dyn_obj(kind: &str, plural: &str, name: &str, data: Value) -> DynamicObject {
        let mut o = DynamicObject::new(name, &resource(kind, plural));
        o.metadata.labels = serde_json::from_value(data["metadata"]["labels"].clone()).ok();
        o.data = json!({"spec": data["spec"], "status": data["status"]});
        o
    }

    fn want(v: &str) -> Wanted {
        Wanted {
            volume: v.into(),
            namespace: None,
            pvc: None,
        }
    }

    #[test]
    fn no_status_yet_is_not_yet_never_a_failure() {
        let w = want("pvc-a");
        let bv = |status: Value| {
            dyn_obj(
                "BackupVolume",
                "backupvolumes",
                "pvc-a-1234abcd",
                json!({"metadata": {"labels": {"backup-volume": "pvc-a"}}, "spec": {"volumeName": "pvc-a"}, "status": status}),
            )
        };
        let synced = bv(
            json!({"lastSyncedAt": "2026-11-26T10:00:00Z", "lastBackupName": "backup-1",
                               "storageClassName": "longhorn", "labels": {}}),
        );
        let backup = |status: Value| {
            dyn_obj(
                "Backup",
                "backups",
                "backup-1",
                json!({"spec": {"labels": {"longhorn.io/volume-access-mode": "rwx"}}, "status": status}),
            )
        };
        let not_yet = |l: Look<Source>| matches!(l, Look::NotYet(_));
        assert!(not_yet(look_volume(&w, &[], &[], &[])));
        assert!(not_yet(look_volume(&w, &[bv(Value::Null)], &[], &[])));
        assert!(not_yet(look_volume(
            &w,
            std::slice::from_ref(&synced),
            &[],
            &[]
        )));
        assert!(not_yet(look_volume(
            &w,
            std::slice::from_ref(&synced),
            &[backup(Value::Null)],
            &[]
        )));
        assert!(not_yet(look_volume(
            &w,
            std::slice::from_ref(&synced),
            &[backup(json!({"state": "InProgress"}))],
            &[]
        )));
        assert!(matches!(
            look_volume(
                &w,
                std::slice::from_ref(&synced),
                &[backup(json!({"state": "Error", "error": "boom"}))],
                &[]
            ),
            Look::Failed(_)
        ));
        let done = backup(
            json!({"state": "Completed", "url": "nfs://n:/x?backup=backup-1&volume=pvc-a",
                                 "volumeSize": "1073741824", "labels": {"longhorn.io/volume-access-mode": "rwx"}}),
        );
        let Look::Ready(src) = look_volume(
            &w,
            std::slice::from_ref(&synced),
            std::slice::from_ref(&done),
            &[],
        ) else {
            panic!("a Completed backup is ready");
        };
        assert_eq!(
            (src.access_mode.as_str(), src.fs_type.as_str()),
            ("rwx", "ext4")
        );
        assert_eq!(src.storage_class, "longhorn");
        // The StorageClass's fsType, when the class exists.
        let xfs: StorageClass = serde_json::from_value(json!({"metadata": {"name": "longhorn"},
            "provisioner": "driver.longhorn.io", "parameters": {"fsType": "xfs"}}))
        .unwrap();
        let Look::Ready(src) = look_volume(&w, &[synced], &[done], &[xfs]) else {
            panic!("ready");
        };
        assert_eq!(src.fs_type, "xfs");
    }

    #[test]
    fn the_sync_request_is_timed_by_the_servers_clock() {
        let mut o = DynamicObject::new("default", &resource("BackupTarget", "backuptargets"));
        o.metadata.managed_fields = serde_json::from_value(json!([
            {"manager": "longhorn-manager", "operation": "Update", "time": "2026-11-26T12:30:00Z"},
            {"manager": FIELD_MANAGER, "operation": "Update", "time": "2026-11-26T12:00:07Z"},
        ]))
        .ok();
        let t = server_time_of_write(&o, FIELD_MANAGER).unwrap();
        assert_eq!(timestamp(t), "2026-11-26T12:00:07Z");
        assert_eq!(server_time_of_write(&o, "someone-else"), None);
    }

    #[test]
    fn the_volume_is_created_as_the_source_was() {
        let src = Source {
            backup: "backup-1".into(),
            url: "nfs://n:/x?backup=backup-1&volume=v".into(),
            size: "1073741824".into(),
            created: None,
            storage_class: "longhorn".into(),
            access_mode: "rwop".into(),
            fs_type: "ext4".into(),
        };
        let v = volume_object(&want("v"), &src, 1);
        assert_eq!(v.data["spec"]["accessMode"], "rwop");
        assert_eq!(v.data["spec"]["restoreVolumeRecurringJob"], "enabled");
        assert_eq!(k8s_access_mode("rwop"), "ReadWriteOncePod");
        assert_eq!(k8s_access_mode("rwx"), "ReadWriteMany");
        assert_eq!(k8s_access_mode("rwo"), "ReadWriteOnce");
    }

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
