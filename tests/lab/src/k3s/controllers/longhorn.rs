//! The Longhorn stand-in: backup target, BackupVolume/Backup discovery from the NAS, volume
//! restore (`spec.fromBackup`), fresh volumes, attachment, and dynamic provisioning through
//! Longhorn's CSI driver. Binding claims to PVs is kube-controller-manager's, in
//! [`super::pv_binder`].
//!
//! Contract followed: `../shared/reference/platform-facts.md` §2 (Longhorn v1.8+), read
//! strictly:
//! - BackupTarget `default` in `longhorn-system`, made by the manager once it runs:
//!   `spec.backupTargetURL`, `spec.pollInterval` (Go duration, default `5m0s`),
//!   `spec.syncRequestedAt`; status `available`, `conditions[type=Unavailable]`,
//!   `lastSyncedAt`, `ownerID`. How and in which order the target, the BackupVolumes and the
//!   Backups appear, one backupstore call at a time, is in [`sync`] (longhorn-manager
//!   v1.11.3's controllers).
//! - BackupVolume `<volume>-<sha256("<volume>-<target>")[..8]>` with labels `backup-volume`,
//!   `backup-target`, `spec.volumeName`, `spec.backupTargetName`; status `lastBackupName`,
//!   `lastBackupAt`, `size`, `labels` (incl. `KubernetesStatus`), `storageClassName`,
//!   `dataStored`, `createdAt`, `lastModificationTime`, `lastSyncedAt`. Backup CRs named by
//!   backup id, labels `backup-volume`/`backup-target`, status `state: Completed`, `url`
//!   (`<target>?backup=<b>&volume=<v>`), `volumeName`, `volumeSize`, `size`, `snapshotName`,
//!   `snapshotCreatedAt`, `backupCreatedAt`, `labels`, `backupTargetName`, `progress`,
//!   `lastSyncedAt`, `compressionMethod`. CRs whose backup left the store are deleted.
//! - Volume with `spec.fromBackup`: the Backup CR named in the URL must exist (until it does
//!   the volume waits, as the real controller retries); at the restore's start
//!   `spec.restoreVolumeRecurringJob` `enabled` (or `ignored` with the Setting
//!   `restore-volume-recurring-jobs` "true") brings back the volume's recurring jobs from the
//!   BackupVolume's `VolumeRecurringJobInfo` label: missing RecurringJobs are created and the
//!   volume gets `recurring-job.longhorn.io/<job>` / `recurring-job-group.longhorn.io/<group>`
//!   labels (`controller/volume_controller.go`, `restoreVolumeRecurringJobs`); then `restoreRequired=true`,
//!   `restoreInitiated=true`, `kubernetesStatus` from the `KubernetesStatus` label (pvName and
//!   pvStatus cleared, `lastPVCRefAt` = `snapshotCreatedAt`), auto-attached
//!   (`state: attached`) with condition `Restore` True `RestoreInProgress` while the blocks
//!   are copied. The upstream Volume CR carries no progress field; the lab reports progress
//!   in the Restore condition's message (`restored N%`) and in `status.actualSize`. Done:
//!   `restoreRequired=false`, `state: detached`, `robustness: unknown`, Restore False with
//!   an empty reason. A block whose sha256 does not match: `state: detached`,
//!   `robustness: faulted`, Restore False `RestoreFailure` ("All replica restore failed and
//!   the volume became Faulted"), `restoreRequired` stays true.
//! - Attached (`state: attached`, `robustness: healthy`, `currentNodeID`) while a pod uses a
//!   PVC bound to a PV whose `csi.volumeHandle` names the volume; detached otherwise.
//! - Provisioning: a PVC without volumeName whose StorageClass (or the default class) has
//!   provisioner `driver.longhorn.io` (StorageClass `longhorn`) gets a fresh empty Volume and
//!   PV `pvc-<claim uid>` (annotation `pv.kubernetes.io/provisioned-by`, claimRef with the
//!   claim's uid), which [`super::pv_binder`] then binds to the claim.
//!
//! The lab's NAS: an `nfs://<host>:/<export>` URL maps to the local directory `/<export>`
//! (the [`crate::nas::NasFixture`] directory is given as the export path), or to
//! `<nas_root>/<export>` when [`LonghornEnv::nas_root`] is set (lab env `LAB_NAS_ROOT`).
//! The host part is not resolved. A missing directory makes the target unavailable; other
//! schemes (s3, cifs, azblob) are reported unavailable ("not supported by the lab").
//!
//! Volume data: [`volume_data_dir`] = `<lab-k3s data dir>/longhorn/volumes/<volume>/data`;
//! deleting a Volume deletes it. Fault switches ([`super::super::faults`]): a stuck restore
//! (progress stops while the switch is on); corrupt backups are real corruption on the NAS
//! ([`crate::nas::corrupt_volume`]).
//! Left out: replicas, engines, snapshots, backups *to* the store, running recurring jobs
//! (RecurringJob objects are served, never run), RWX
//! share manager, v1.6/1.7 Settings (`backup-target` Setting CRs are not mirrored).

mod sync;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::ops::{self, set_condition};
use super::parse_quantity;

use crate::k3s::faults;
use crate::k3s::store::Store;
use crate::nas::{self, Backupstore};

pub const NAMESPACE: &str = "longhorn-system";
pub const GROUP: &str = "longhorn.io";
pub const VERSION: &str = "v1beta2";
pub const CSI_DRIVER: &str = "driver.longhorn.io";
const MANAGER: &str = "longhorn-manager";

/// `<lab-k3s data dir>/longhorn/volumes/<volume>/data`: where a Longhorn volume's files live.
pub fn volume_data_dir(data_dir: &Path, volume_name: &str) -> PathBuf {
    data_dir
        .join("longhorn/volumes")
        .join(volume_name)
        .join("data")
}

/// What the Longhorn stand-in needs from the lab.
#[derive(Clone, Debug)]
pub struct LonghornEnv {
    /// lab-k3s's data dir (volumes live under it; fault switches are read from it).
    pub data_dir: PathBuf,
    /// Prefix for NFS export paths (`LAB_NAS_ROOT`); `None`: the export path is local as is.
    pub nas_root: Option<PathBuf>,
    /// The node name (`ownerID`, `currentNodeID`).
    pub node_name: String,
    /// How long one restore takes at least (spread over 10 progress steps).
    pub restore_time: Duration,
    /// Restore throughput (bytes per second of backup data) under `LAB_PACE=realistic`: a
    /// restore then takes at least its data over this. None: [`Self::restore_time`] only.
    pub restore_bytes_per_sec: Option<u64>,
    /// Wall time of one backupstore call (listing the NAS, reading a `volume.cfg` or a
    /// backup's config): the pace of the piecemeal sync in [`sync`]. 250 ms, 2 s under
    /// `LAB_PACE=realistic`, divided by the lab clock's speed; the fault switch
    /// `slowBackupstoreMs` overrides it.
    pub store_call: Duration,
    /// The lab clock's speed: `spec.pollInterval` is lab time.
    pub clock_speed: u32,
    /// How often the controller looks again without an event (pods, NAS, faults).
    pub tick: Duration,
}

/// `LAB_PACE=realistic`: the pace of a real node on a home network.
fn realistic() -> bool {
    std::env::var("LAB_PACE").as_deref() == Ok("realistic")
}

impl LonghornEnv {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let realistic = realistic();
        LonghornEnv {
            data_dir: data_dir.into(),
            nas_root: std::env::var_os("LAB_NAS_ROOT").map(PathBuf::from),
            node_name: "lab".into(),
            // `LAB_RESTORE_MS`: the benchmark's fixed time per restore.
            restore_time: Duration::from_millis(
                std::env::var("LAB_RESTORE_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(if realistic { 5000 } else { 1000 }),
            ),
            // An NFS restore over a home LAN: ~20 MiB/s of backup data.
            restore_bytes_per_sec: realistic.then_some(20 << 20),
            store_call: Duration::from_millis(if realistic { 2000 } else { 250 }),
            clock_speed: 1,
            tick: Duration::from_millis(250),
        }
    }

    /// Runs the store calls and the poll timer at the lab clock's `speed`.
    pub fn with_clock_speed(mut self, speed: u32) -> Self {
        self.clock_speed = speed.max(1);
        self.store_call /= self.clock_speed;
        self.tick = self
            .tick
            .min(self.store_call.max(Duration::from_millis(20)));
        self
    }
}

// ------------------------------------------------------------------ CRDs

fn s() -> Value {
    json!({"type": "string"})
}
fn b() -> Value {
    json!({"type": "boolean"})
}
fn i() -> Value {
    json!({"type": "integer"})
}
fn e(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}
fn smap() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}
fn sarr() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}
fn obj(props: &[(&str, Value)]) -> Value {
    let m: serde_json::Map<String, Value> = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    json!({"type": "object", "properties": m})
}
fn conditions() -> Value {
    json!({"type": "array", "nullable": true, "items": obj(&[
        ("lastProbeTime", s()), ("lastTransitionTime", s()), ("message", s()),
        ("reason", s()), ("status", s()), ("type", s()),
    ])})
}

/// One Longhorn kind as the lab serves it: our own declaration of the fields of
/// longhorn-manager's `k8s/pkg/apis/longhorn/v1beta2` types that the lab supports.
pub struct LonghornKind {
    pub kind: &'static str,
    pub plural: &'static str,
    pub short: &'static str,
    /// The `openAPIV3Schema`.
    pub schema: Value,
    pub columns: Value,
}

pub fn longhorn_kinds() -> Vec<LonghornKind> {
    let col =
        |name: &str, ty: &str, path: &str| json!({"name": name, "type": ty, "jsonPath": path});
    let age = col("Age", "date", ".metadata.creationTimestamp");
    let root = |spec: Option<Value>, status: Value| {
        let mut props = vec![
            ("apiVersion", s()),
            ("kind", s()),
            ("metadata", json!({"type": "object"})),
        ];
        if let Some(sp) = spec {
            props.push(("spec", sp));
        }
        props.push(("status", status));
        obj(&props)
    };
    let setting = {
        let mut r = obj(&[
            ("apiVersion", s()),
            ("kind", s()),
            ("metadata", json!({"type": "object"})),
            ("value", s()),
            ("status", {
                let mut st = obj(&[("applied", b())]);
                st["required"] = json!(["applied"]);
                st
            }),
        ]);
        r["required"] = json!(["value"]);
        r
    };
    vec![
        LonghornKind {
            kind: "Setting",
            plural: "settings",
            short: "lhs",
            schema: setting,
            columns: json!([
                col("Value", "string", ".value"),
                col("Applied", "boolean", ".status.applied"),
                age
            ]),
        },
        LonghornKind {
            kind: "BackupTarget",
            plural: "backuptargets",
            short: "lhbt",
            schema: root(
                Some(obj(&[
                    ("backupTargetURL", s()),
                    ("credentialSecret", s()),
                    ("pollInterval", s()),
                    (
                        "syncRequestedAt",
                        json!({"type": "string", "format": "date-time", "nullable": true}),
                    ),
                ])),
                obj(&[
                    ("available", b()),
                    ("conditions", conditions()),
                    (
                        "lastSyncedAt",
                        json!({"type": "string", "format": "date-time", "nullable": true}),
                    ),
                    ("ownerID", s()),
                ]),
            ),
            columns: json!([
                col("URL", "string", ".spec.backupTargetURL"),
                col("Credential", "string", ".spec.credentialSecret"),
                col("LastBackupAt", "string", ".spec.pollInterval"),
                col("Available", "boolean", ".status.available"),
                col("LastSyncedAt", "string", ".status.lastSyncedAt")
            ]),
        },
        LonghornKind {
            kind: "BackupVolume",
            plural: "backupvolumes",
            short: "lhbv",
            schema: root(
                Some(obj(&[
                    ("backupTargetName", s()),
                    (
                        "syncRequestedAt",
                        json!({"type": "string", "format": "date-time", "nullable": true}),
                    ),
                    ("volumeName", s()),
                ])),
                obj(&[
                    ("backingImageChecksum", s()),
                    ("backingImageName", s()),
                    ("createdAt", s()),
                    ("dataStored", s()),
                    ("labels", {
                        let mut m = smap();
                        m["nullable"] = json!(true);
                        m
                    }),
                    ("lastBackupAt", s()),
                    ("lastBackupName", s()),
                    (
                        "lastModificationTime",
                        json!({"type": "string", "format": "date-time", "nullable": true}),
                    ),
                    (
                        "lastSyncedAt",
                        json!({"type": "string", "format": "date-time", "nullable": true}),
                    ),
                    ("messages", {
                        let mut m = smap();
                        m["nullable"] = json!(true);
                        m
                    }),
                    ("ownerID", s()),
                    ("size", s()),
                    ("storageClassName", s()),
                ]),
            ),
            columns: json!([
                col("BackupTarget", "string", ".spec.backupTargetName"),
                col("CreatedAt", "string", ".status.createdAt"),
                col("LastBackupName", "string", ".status.lastBackupName"),
                col("LastBackupAt", "string", ".status.lastBackupAt"),
                col("LastSyncedAt", "string", ".status.lastSyncedAt")
            ]),
        },
        LonghornKind {
            kind: "Backup",
            plural: "backups",
            short: "lhb",
            schema: root(
                Some(obj(&[
                    ("backupBlockSize", e(&["-1", "2097152", "16777216"])),
                    ("backupMode", e(&["full", "incremental"])),
                    ("labels", {
                        let mut m = smap();
                        m["nullable"] = json!(true);
                        m
                    }),
                    ("snapshotName", s()),
                    (
                        "syncRequestedAt",
                        json!({"type": "string", "format": "date-time", "nullable": true}),
                    ),
                ])),
                obj(&[
                    ("backupCreatedAt", s()),
                    ("backupTargetName", s()),
                    ("compressionMethod", s()),
                    ("error", s()),
                    ("labels", {
                        let mut m = smap();
                        m["nullable"] = json!(true);
                        m
                    }),
                    (
                        "lastSyncedAt",
                        json!({"type": "string", "format": "date-time", "nullable": true}),
                    ),
                    ("messages", {
                        let mut m = smap();
                        m["nullable"] = json!(true);
                        m
                    }),
                    ("newlyUploadDataSize", s()),
                    ("ownerID", s()),
                    ("progress", i()),
                    ("reUploadedDataSize", s()),
                    ("replicaAddress", s()),
                    ("size", s()),
                    ("snapshotCreatedAt", s()),
                    ("snapshotName", s()),
                    ("state", s()),
                    ("url", s()),
                    ("volumeBackingImageName", s()),
                    ("volumeCreated", s()),
                    ("volumeName", s()),
                    ("volumeSize", s()),
                ]),
            ),
            columns: json!([
                col("SnapshotName", "string", ".status.snapshotName"),
                col("SnapshotSize", "string", ".status.size"),
                col("SnapshotCreatedAt", "string", ".status.snapshotCreatedAt"),
                col("BackupTarget", "string", ".status.backupTargetName"),
                col("State", "string", ".status.state"),
                col("LastSyncedAt", "string", ".status.lastSyncedAt")
            ]),
        },
        LonghornKind {
            kind: "Volume",
            plural: "volumes",
            short: "lhv",
            schema: root(
                Some(obj(&[
                    ("Standby", b()),
                    ("accessMode", e(&["rwo", "rwop", "rwx"])),
                    ("backingImage", s()),
                    ("backupBlockSize", e(&["2097152", "16777216"])),
                    ("backupCompressionMethod", e(&["none", "lz4", "gzip"])),
                    ("backupTargetName", s()),
                    ("cloneMode", e(&["", "full-copy", "linked-clone"])),
                    ("dataEngine", e(&["v1", "v2"])),
                    (
                        "dataLocality",
                        e(&["disabled", "best-effort", "strict-local"]),
                    ),
                    ("dataSource", s()),
                    ("disableFrontend", b()),
                    ("diskSelector", sarr()),
                    ("encrypted", b()),
                    (
                        "freezeFilesystemForSnapshot",
                        e(&["ignored", "enabled", "disabled"]),
                    ),
                    ("fromBackup", s()),
                    ("frontend", e(&["blockdev", "iscsi", "nvmf", "ublk", ""])),
                    ("image", s()),
                    ("lastAttachedBy", s()),
                    ("migratable", b()),
                    ("migrationNodeID", s()),
                    ("nodeID", s()),
                    ("nodeSelector", sarr()),
                    ("numberOfReplicas", i()),
                    ("offlineRebuilding", e(&["ignored", "disabled", "enabled"])),
                    ("rebuildConcurrentSyncLimit", i()),
                    (
                        "replicaAutoBalance",
                        e(&["ignored", "disabled", "least-effort", "best-effort"]),
                    ),
                    (
                        "replicaDiskSoftAntiAffinity",
                        e(&["ignored", "enabled", "disabled"]),
                    ),
                    ("replicaRebuildingBandwidthLimit", i()),
                    (
                        "replicaSoftAntiAffinity",
                        e(&["ignored", "enabled", "disabled"]),
                    ),
                    (
                        "replicaZoneSoftAntiAffinity",
                        e(&["ignored", "enabled", "disabled"]),
                    ),
                    (
                        "restoreVolumeRecurringJob",
                        e(&["ignored", "enabled", "disabled"]),
                    ),
                    ("revisionCounterDisabled", b()),
                    ("size", s()),
                    (
                        "snapshotDataIntegrity",
                        e(&["ignored", "disabled", "enabled", "fast-check"]),
                    ),
                    ("snapshotMaxCount", i()),
                    ("snapshotMaxSize", s()),
                    ("staleReplicaTimeout", i()),
                    ("ublkNumberOfQueue", i()),
                    ("ublkQueueDepth", i()),
                    (
                        "unmapMarkSnapChainRemoved",
                        e(&["ignored", "disabled", "enabled"]),
                    ),
                ])),
                obj(&[
                    ("actualSize", i()),
                    ("conditions", conditions()),
                    ("currentImage", s()),
                    ("currentMigrationNodeID", s()),
                    ("currentNodeID", s()),
                    ("expansionRequired", b()),
                    ("frontendDisabled", b()),
                    ("isStandby", b()),
                    (
                        "kubernetesStatus",
                        obj(&[
                            ("lastPVCRefAt", s()),
                            ("lastPodRefAt", s()),
                            ("namespace", s()),
                            ("pvName", s()),
                            ("pvStatus", s()),
                            ("pvcName", s()),
                            (
                                "workloadsStatus",
                                json!({"type": "array", "nullable": true, "items": obj(&[
                                    ("podName", s()), ("podStatus", s()), ("workloadName", s()), ("workloadType", s()),
                                ])}),
                            ),
                        ]),
                    ),
                    ("lastBackup", s()),
                    ("lastBackupAt", s()),
                    ("lastDegradedAt", s()),
                    ("ownerID", s()),
                    ("remountRequestedAt", s()),
                    ("restoreInitiated", b()),
                    ("restoreRequired", b()),
                    ("robustness", s()),
                    ("shareEndpoint", s()),
                    ("shareState", s()),
                    ("state", s()),
                ]),
            ),
            columns: json!([
                col("Data Engine", "string", ".spec.dataEngine"),
                col("State", "string", ".status.state"),
                col("Robustness", "string", ".status.robustness"),
                col("Size", "string", ".spec.size"),
                col("Node", "string", ".status.currentNodeID"),
                age
            ]),
        },
        // Served so that clients can list and create them; the lab never runs them (no
        // backups *to* the store), which rebox's restore relies on being its own choice.
        LonghornKind {
            kind: "RecurringJob",
            plural: "recurringjobs",
            short: "lhrj",
            schema: root(
                Some(obj(&[
                    ("concurrency", i()),
                    ("cron", s()),
                    ("groups", sarr()),
                    ("labels", smap()),
                    ("name", s()),
                    ("parameters", smap()),
                    ("retain", i()),
                    (
                        "task",
                        e(&[
                            "snapshot",
                            "snapshot-force-create",
                            "snapshot-cleanup",
                            "snapshot-delete",
                            "backup",
                            "backup-force-create",
                            "filesystem-trim",
                            "system-backup",
                        ]),
                    ),
                ])),
                obj(&[("executionCount", i()), ("ownerID", s())]),
            ),
            columns: json!([
                col("Groups", "string", ".spec.groups"),
                col("Task", "string", ".spec.task"),
                col("Cron", "string", ".spec.cron"),
                col("Retain", "integer", ".spec.retain"),
                col("Concurrency", "integer", ".spec.concurrency"),
                age,
                col("Labels", "string", ".spec.labels"),
            ]),
        },
    ]
}

/// The CustomResourceDefinitions of the Longhorn kinds the lab serves (what the Longhorn
/// chart installs), from [`longhorn_kinds`].
pub fn longhorn_crds() -> Vec<Value> {
    longhorn_kinds()
        .into_iter()
        .map(|k| {
            let singular = k.kind.to_lowercase();
            json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{}.{GROUP}", k.plural), "labels": {
                    "app.kubernetes.io/name": "longhorn", "app.kubernetes.io/instance": "longhorn", "longhorn-manager": ""}},
                "spec": {
                    "group": GROUP,
                    "names": {"kind": k.kind, "listKind": format!("{}List", k.kind), "plural": k.plural,
                              "singular": singular, "shortNames": [k.short]},
                    "scope": "Namespaced",
                    "versions": [{
                        "name": VERSION, "served": true, "storage": true,
                        "subresources": {"status": {}},
                        "additionalPrinterColumns": k.columns,
                        "schema": {"openAPIV3Schema": k.schema},
                    }],
                },
            })
        })
        .collect()
}

// ------------------------------------------------------------------ helpers

fn sha8(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))[..8].to_string()
}

/// BackupVolume name for v1.8+: `<volume>-<first 8 hex of sha256("<volume>-<target>")>`.
pub fn backup_volume_name(volume: &str, target: &str) -> String {
    format!("{volume}-{}", sha8(&format!("{volume}-{target}")))
}

/// `<target>?backup=<b>&volume=<v>` (keys sorted, as Go's `url.Values.Encode`).
pub fn backup_url(target: &str, backup: &str, volume: &str) -> String {
    format!("{target}?backup={backup}&volume={volume}")
}

/// (backup, volume) from a backup URL.
pub fn parse_backup_url(url: &str) -> Option<(String, String)> {
    let (_, q) = url.split_once('?')?;
    let mut backup = None;
    let mut volume = None;
    for kv in q.split('&') {
        match kv.split_once('=') {
            Some(("backup", v)) => backup = Some(v.to_string()),
            Some(("volume", v)) => volume = Some(v.to_string()),
            _ => {}
        }
    }
    Some((backup?, volume?))
}

/// The local directory behind a backup target URL, or why there is none.
pub fn target_dir(url: &str, nas_root: Option<&Path>) -> Result<PathBuf, String> {
    let Some(rest) = url.strip_prefix("nfs://") else {
        let scheme = url.split("://").next().unwrap_or(url);
        return Err(format!(
            "failed to init backup target clients: backup target scheme {scheme:?} is not supported by the lab (only nfs://)"
        ));
    };
    let rest = rest.split('?').next().unwrap_or(rest);
    let Some((_host, export)) = rest.split_once(':') else {
        return Err(format!("failed to init backup target clients: invalid NFS backup target URL {url:?}: expected nfs://<host>:/<export>"));
    };
    let export = export.trim_end_matches('/');
    if !export.starts_with('/') {
        return Err(format!(
            "failed to init backup target clients: invalid NFS export path {export:?} in {url:?}"
        ));
    }
    let dir = match nas_root {
        Some(r) => r.join(export.trim_start_matches('/')),
        None => PathBuf::from(export),
    };
    if !dir.is_dir() {
        return Err(format!("failed to init backup target clients: cannot mount nfs {url}: mount.nfs4: mounting {} failed, reason given by server: No such file or directory", export));
    }
    Ok(dir)
}

/// Go duration (`300s`, `5m0s`, `1h`) in seconds.
fn parse_duration(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next().unwrap());
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
    }
    if !num.is_empty() {
        total += num.parse::<f64>().ok()?;
    }
    Some(total)
}

// ------------------------------------------------------------------ controller

struct Shared {
    /// Volumes with a restore task running.
    restoring: HashSet<String>,
}

struct Controller {
    store: Arc<Store>,
    env: LonghornEnv,
    shared: Arc<Mutex<Shared>>,
    /// BackupTarget, BackupVolume and Backup controllers ([`sync`]).
    sync: sync::Sync,
}

/// Starts the Longhorn stand-in with the lab's environment (called by `spawn_all`).
pub fn spawn(store: Arc<Store>, env: &super::LabEnv) -> tokio::task::JoinHandle<()> {
    spawn_with(
        store,
        LonghornEnv::new(&env.data_dir).with_clock_speed(env.clock.speed),
    )
}

/// Starts the Longhorn stand-in on `store` (returns at once; runs until the runtime stops).
/// A second call for the same store does nothing (the first controller keeps running).
pub fn spawn_with(store: Arc<Store>, env: LonghornEnv) -> tokio::task::JoinHandle<()> {
    if !ops::claim_once(&store, "longhorn") {
        return tokio::spawn(async {});
    }
    tokio::spawn(run(store, env))
}

pub async fn run(store: Arc<Store>, mut env: LonghornEnv) {
    if let Some(n) = ops::list(&store, "", "nodes", None)
        .first()
        .and_then(|n| n["metadata"]["name"].as_str().map(String::from))
    {
        env.node_name = n;
    }
    let mut rx = store.subscribe();
    let mut tick = tokio::time::interval(env.tick);
    let mut c = Controller {
        store,
        env,
        shared: Arc::new(Mutex::new(Shared {
            restoring: HashSet::new(),
        })),
        sync: sync::Sync::default(),
    };
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    let relevant = ev.group == GROUP
                        || (ev.group.is_empty() && matches!(ev.plural.as_str(), "persistentvolumes" | "persistentvolumeclaims" | "pods"))
                        || ev.plural == "customresourcedefinitions";
                    if !relevant { continue; }
                    if ev.kind == "DELETED" && ev.group == GROUP && ev.plural == "volumes" {
                        if let Some(n) = ev.object["metadata"]["name"].as_str() {
                            let _ = std::fs::remove_dir_all(c.env.data_dir.join("longhorn/volumes").join(n));
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {}
        }
        // Coalesce a burst of events into one pass.
        while rx.try_recv().is_ok() {}
        c.reconcile();
    }
}

impl Controller {
    fn reconcile(&mut self) {
        if ops::rt(&self.store, GROUP, "volumes").is_none()
            || ops::get(&self.store, "", "namespaces", "", NAMESPACE).is_none()
        {
            return;
        }
        self.sync.pass(&self.store, &self.env);
        self.volumes();
        self.provision();
        self.attachments();
    }

    fn volumes(&mut self) {
        let st = self.store.clone();
        for v in ops::list(&st, GROUP, "volumes", Some(NAMESPACE)) {
            let name = v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !v["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let from = v["spec"]["fromBackup"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let status = &v["status"];
            if status["state"].is_null() || status["state"] == "" {
                if from.is_empty() {
                    let _ = std::fs::create_dir_all(volume_data_dir(&self.env.data_dir, &name));
                    let _ = ops::modify(
                        &st,
                        GROUP,
                        "volumes",
                        NAMESPACE,
                        &name,
                        Some("status"),
                        MANAGER,
                        |o| {
                            o["status"] = json!({
                                "state": "detached", "robustness": "unknown", "restoreRequired": false,
                                "restoreInitiated": false, "ownerID": self.env.node_name, "currentNodeID": "",
                                "frontendDisabled": false, "actualSize": 0, "lastBackup": "", "lastBackupAt": "",
                                "kubernetesStatus": {"namespace": "", "pvcName": "", "pvName": "", "pvStatus": "", "lastPVCRefAt": "", "lastPodRefAt": "", "workloadsStatus": null},
                                "conditions": [],
                            });
                            set_condition(
                                &mut o["status"]["conditions"],
                                "Scheduled",
                                "True",
                                "",
                                "",
                            );
                            set_condition(
                                &mut o["status"]["conditions"],
                                "Restore",
                                "False",
                                "",
                                "",
                            );
                            true
                        },
                    );
                } else {
                    self.start_restore(&v, &from);
                }
                continue;
            }
            let restoring = self.shared.lock().unwrap().restoring.contains(&name);
            let faulted = status["robustness"] == "faulted";
            if status["restoreRequired"] == true && !restoring && !faulted && !from.is_empty() {
                // A restore interrupted by a restart (power loss) starts over.
                self.start_restore(&v, &from);
            }
        }
    }

    /// `restoreVolumeRecurringJobs` (`controller/volume_controller.go`), decided by
    /// `shouldRestoreRecurringJobs`: `enabled` restores, `disabled` does not, `ignored` (or
    /// empty) follows the Setting `restore-volume-recurring-jobs` (default false) unless the
    /// volume already carries recurring-job labels of its own. Each job of the BackupVolume's
    /// `VolumeRecurringJobInfo` label is created if missing (a same-named job with another
    /// spec is kept as it is: upstream would make a new name; left out), and the volume is
    /// labelled with it (`fromJob`) and its groups (`fromGroup`).
    fn restore_recurring_jobs(&self, v: &Value, src_volume: &str) {
        let st = &self.store;
        let mode = v["spec"]["restoreVolumeRecurringJob"]
            .as_str()
            .unwrap_or("");
        let own_labels = v["metadata"]["labels"].as_object().is_some_and(|l| {
            l.keys().any(|k| {
                k.starts_with("recurring-job.longhorn.io/")
                    || (k.starts_with("recurring-job-group.longhorn.io/")
                        && k != "recurring-job-group.longhorn.io/default")
            })
        });
        let restore = match mode {
            "enabled" => true,
            "disabled" => false,
            _ => {
                !own_labels
                    && ops::get(
                        st,
                        GROUP,
                        "settings",
                        NAMESPACE,
                        "restore-volume-recurring-jobs",
                    )
                    .is_some_and(|s| s["value"] == "true")
            }
        };
        if !restore {
            return;
        }
        let Some(bv) = ops::list(st, GROUP, "backupvolumes", Some(NAMESPACE))
            .into_iter()
            .find(|b| {
                b["spec"]["volumeName"] == src_volume && b["spec"]["backupTargetName"] == "default"
            })
        else {
            return;
        };
        let Some(info) = bv["status"]["labels"][nas::VOLUME_RECURRING_JOB_INFO]
            .as_str()
            .and_then(|s| serde_json::from_str::<BTreeMap<String, Value>>(s).ok())
        else {
            return;
        };
        let mut labels = BTreeMap::new();
        for (job, i) in &info {
            if ops::get(st, GROUP, "recurringjobs", NAMESPACE, job).is_none() {
                let mut spec = i["jobSpec"].clone();
                for (k, empty) in [
                    ("groups", json!([])),
                    ("labels", json!({})),
                    ("parameters", json!({})),
                ] {
                    if spec[k].is_null() {
                        spec[k] = empty;
                    }
                }
                spec["name"] = json!(job);
                let _ = ops::create(
                    st,
                    GROUP,
                    "recurringjobs",
                    NAMESPACE,
                    json!({"apiVersion": format!("{GROUP}/{VERSION}"), "kind": "RecurringJob",
                           "metadata": {"name": job, "namespace": NAMESPACE}, "spec": spec}),
                    MANAGER,
                );
            }
            if i["fromJob"] == true {
                labels.insert(format!("recurring-job.longhorn.io/{job}"), "enabled");
            }
            for g in i["fromGroup"].as_array().into_iter().flatten() {
                if let Some(g) = g.as_str() {
                    labels.insert(format!("recurring-job-group.longhorn.io/{g}"), "enabled");
                }
            }
        }
        let name = v["metadata"]["name"].as_str().unwrap_or_default();
        let _ = ops::modify(st, GROUP, "volumes", NAMESPACE, name, None, MANAGER, |o| {
            if !o["metadata"]["labels"].is_object() {
                o["metadata"]["labels"] = json!({});
            }
            for (k, val) in &labels {
                o["metadata"]["labels"][k] = json!(val);
            }
            true
        });
    }

    fn start_restore(&self, v: &Value, from: &str) {
        let st = self.store.clone();
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Some((backup, src_volume)) = parse_backup_url(from) else {
            let _ = ops::modify(
                &st,
                GROUP,
                "volumes",
                NAMESPACE,
                &name,
                Some("status"),
                MANAGER,
                |o| {
                    o["status"]["state"] = json!("detached");
                    o["status"]["robustness"] = json!("faulted");
                    set_condition(
                        &mut o["status"]["conditions"],
                        "Restore",
                        "False",
                        "RestoreFailure",
                        &format!("invalid backup URL {from:?}"),
                    );
                    true
                },
            );
            return;
        };
        // The Backup CR must exist (and be Completed) before the restore starts.
        let Some(bcr) = ops::get(&st, GROUP, "backups", NAMESPACE, &backup) else {
            return;
        };
        if bcr["status"]["state"] != "Completed" {
            return;
        }
        let snapshot_at = bcr["status"]["snapshotCreatedAt"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ks: Value = bcr["status"]["labels"]["KubernetesStatus"]
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(json!({}));
        let kstatus = json!({
            "namespace": ks["namespace"].as_str().unwrap_or_default(),
            "pvcName": ks["pvcName"].as_str().unwrap_or_default(),
            "pvName": "", "pvStatus": "",
            "lastPVCRefAt": snapshot_at,
            "lastPodRefAt": ks["lastPodRefAt"].as_str().unwrap_or_default(),
            "workloadsStatus": ks["workloadsStatus"].clone(),
        });
        if v["status"]["restoreInitiated"] != true {
            self.restore_recurring_jobs(v, &src_volume);
        }
        self.shared.lock().unwrap().restoring.insert(name.clone());
        let node = self.env.node_name.clone();
        let backup_at = bcr["status"]["backupCreatedAt"].clone();
        let _ = ops::modify(
            &st,
            GROUP,
            "volumes",
            NAMESPACE,
            &name,
            Some("status"),
            MANAGER,
            |o| {
                let conds = o["status"]["conditions"].take();
                o["status"] = json!({
                    "state": "attached", "robustness": "healthy", "restoreRequired": true,
                    "restoreInitiated": true, "ownerID": node, "currentNodeID": node,
                    "frontendDisabled": true, "actualSize": 0, "lastBackup": backup, "lastBackupAt": backup_at,
                    "kubernetesStatus": kstatus, "conditions": conds,
                });
                set_condition(&mut o["status"]["conditions"], "Scheduled", "True", "", "");
                set_condition(
                    &mut o["status"]["conditions"],
                    "Restore",
                    "True",
                    "RestoreInProgress",
                    &format!("restoring backup {backup}: restored 0%"),
                );
                true
            },
        );
        let target_url = from.split('?').next().unwrap_or_default().to_string();
        let nas_root = self.env.nas_root.clone();
        let data_dir = self.env.data_dir.clone();
        let data_bytes = bcr["status"]["size"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let by_size = self
            .env
            .restore_bytes_per_sec
            .map(|bps| Duration::from_secs_f64(data_bytes as f64 / bps.max(1) as f64))
            .unwrap_or_default();
        let step = self.env.restore_time.max(by_size) / self.env.clock_speed.max(1) / 10;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let res = restore(
                &st,
                &data_dir,
                nas_root.as_deref(),
                &target_url,
                &name,
                &backup,
                step,
            );
            shared.lock().unwrap().restoring.remove(&name);
            let _ = ops::modify(
                &st,
                GROUP,
                "volumes",
                NAMESPACE,
                &name,
                Some("status"),
                MANAGER,
                |o| {
                    match &res {
                        Ok(size) => {
                            o["status"]["restoreRequired"] = json!(false);
                            o["status"]["state"] = json!("detached");
                            o["status"]["robustness"] = json!("unknown");
                            o["status"]["currentNodeID"] = json!("");
                            o["status"]["frontendDisabled"] = json!(false);
                            o["status"]["actualSize"] = json!(size);
                            set_condition(
                                &mut o["status"]["conditions"],
                                "Restore",
                                "False",
                                "",
                                "",
                            );
                        }
                        Err(err) => {
                            o["status"]["state"] = json!("detached");
                            o["status"]["robustness"] = json!("faulted");
                            o["status"]["currentNodeID"] = json!("");
                            set_condition(&mut o["status"]["conditions"], "Restore", "False", "RestoreFailure",
                                      &format!("All replica restore failed and the volume became Faulted: {err:#}"));
                        }
                    }
                    true
                },
            );
        });
    }

    /// Dynamic provisioning (Longhorn's CSI driver and the csi-provisioner sidecar): a PVC
    /// without volumeName whose StorageClass (or the default one) has provisioner
    /// [`CSI_DRIVER`] gets a fresh Volume and a PV `pvc-<claim uid>` whose claimRef names it;
    /// binding the claim to that PV is [`super::pv_binder`]'s.
    fn provision(&self) {
        let st = &self.store;
        for pvc in ops::list(st, "", "persistentvolumeclaims", None) {
            let ns = pvc["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = pvc["metadata"]["name"].as_str().unwrap_or_default();
            if !pvc["metadata"]["deletionTimestamp"].is_null()
                || pvc["spec"]["volumeName"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
            {
                continue;
            }
            let request = pvc["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .and_then(parse_quantity)
                .unwrap_or(0);
            let class = pvc["spec"]["storageClassName"].as_str().unwrap_or_default();
            let class_name = if class.is_empty() {
                default_class(st)
            } else {
                Some(class.to_string())
            };
            let Some(class_name) = class_name else {
                continue;
            };
            let Some(sc) = ops::get(st, "storage.k8s.io", "storageclasses", "", &class_name) else {
                continue;
            };
            if sc["provisioner"] != CSI_DRIVER {
                continue;
            }
            let uid = pvc["metadata"]["uid"].as_str().unwrap_or_default();
            let vol = format!("pvc-{uid}");
            let replicas: i64 = sc["parameters"]["numberOfReplicas"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(3);
            if ops::get(st, GROUP, "volumes", NAMESPACE, &vol).is_none() {
                let _ = ops::create(
                    st,
                    GROUP,
                    "volumes",
                    NAMESPACE,
                    json!({
                        "apiVersion": format!("{GROUP}/{VERSION}"), "kind": "Volume",
                        "metadata": {"name": vol, "namespace": NAMESPACE},
                        "spec": {"size": request.to_string(), "numberOfReplicas": replicas, "frontend": "blockdev",
                                 "dataEngine": "v1", "accessMode": "rwo"},
                    }),
                    "longhorn-csi-plugin",
                );
            }
            let qty = pvc["spec"]["resources"]["requests"]["storage"].clone();
            if ops::get(st, "", "persistentvolumes", "", &vol).is_none() {
                let _ = ops::create(
                    st,
                    "",
                    "persistentvolumes",
                    "",
                    json!({
                        "apiVersion": "v1", "kind": "PersistentVolume",
                        "metadata": {"name": vol, "annotations": {"pv.kubernetes.io/provisioned-by": CSI_DRIVER}},
                        "spec": {
                            "capacity": {"storage": qty},
                            "accessModes": pvc["spec"]["accessModes"].clone(),
                            "persistentVolumeReclaimPolicy": sc["reclaimPolicy"].as_str().unwrap_or("Delete"),
                            "storageClassName": class_name, "volumeMode": "Filesystem",
                            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid, "apiVersion": "v1"},
                            "csi": {"driver": CSI_DRIVER, "volumeHandle": vol, "fsType": "ext4",
                                    "volumeAttributes": {"numberOfReplicas": replicas.to_string(), "staleReplicaTimeout": "30"}},
                        },
                    }),
                    "csi-provisioner",
                );
            }
        }
    }

    /// Attachment (a pod uses the claim) and `kubernetesStatus` from PV/PVC/pods.
    fn attachments(&self) {
        let st = &self.store;
        let pvs = ops::list(st, "", "persistentvolumes", None);
        let pods = ops::list(st, "", "pods", None);
        let mut by_volume: HashMap<String, (Value, Vec<Value>)> = HashMap::new();
        for pv in &pvs {
            if pv["spec"]["csi"]["driver"] != CSI_DRIVER {
                continue;
            }
            let Some(handle) = pv["spec"]["csi"]["volumeHandle"].as_str() else {
                continue;
            };
            let claim = &pv["spec"]["claimRef"];
            let users: Vec<Value> = pods
                .iter()
                .filter(|p| {
                    claim.is_object()
                        && p["metadata"]["namespace"] == claim["namespace"]
                        && p["metadata"]["deletionTimestamp"].is_null()
                        && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                        && p["spec"]["volumes"].as_array().is_some_and(|vs| {
                            vs.iter()
                                .any(|v| v["persistentVolumeClaim"]["claimName"] == claim["name"])
                        })
                })
                .cloned()
                .collect();
            by_volume.insert(handle.to_string(), (pv.clone(), users));
        }
        for v in ops::list(st, GROUP, "volumes", Some(NAMESPACE)) {
            let name = v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let status = &v["status"];
            if status["state"].is_null()
                || status["restoreRequired"] == true
                || status["robustness"] == "faulted"
            {
                continue;
            }
            let (pv, users) = by_volume
                .get(&name)
                .cloned()
                .unwrap_or((Value::Null, vec![]));
            let attached = !users.is_empty();
            let node = self.env.node_name.clone();
            let _ = ops::modify(
                st,
                GROUP,
                "volumes",
                NAMESPACE,
                &name,
                Some("status"),
                MANAGER,
                |o| {
                    let s = &mut o["status"];
                    if attached {
                        s["state"] = json!("attached");
                        s["robustness"] = json!("healthy");
                        s["currentNodeID"] = json!(node);
                    } else {
                        s["state"] = json!("detached");
                        s["robustness"] = json!("unknown");
                        s["currentNodeID"] = json!("");
                    }
                    if pv.is_object() {
                        let k = &mut s["kubernetesStatus"];
                        k["pvName"] = pv["metadata"]["name"].clone();
                        k["pvStatus"] = pv["status"]["phase"].clone();
                        if pv["spec"]["claimRef"].is_object() {
                            k["namespace"] = pv["spec"]["claimRef"]["namespace"].clone();
                            k["pvcName"] = pv["spec"]["claimRef"]["name"].clone();
                        }
                        if attached {
                            k["workloadsStatus"] = json!(users.iter().map(|p| json!({
                            "podName": p["metadata"]["name"], "podStatus": p["status"]["phase"].as_str().unwrap_or("Pending"),
                            "workloadName": p["metadata"]["ownerReferences"][0]["name"].as_str().unwrap_or_default(),
                            "workloadType": p["metadata"]["ownerReferences"][0]["kind"].as_str().unwrap_or_default(),
                        })).collect::<Vec<_>>());
                        }
                    }
                    true
                },
            );
        }
    }
}

fn default_class(st: &Store) -> Option<String> {
    ops::list(st, "storage.k8s.io", "storageclasses", None)
        .into_iter()
        .find(|sc| {
            sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
        })
        .and_then(|sc| sc["metadata"]["name"].as_str().map(String::from))
}

/// Copies a backup into the volume's data dir with progress; returns the image size.
fn restore(
    st: &Store,
    data_dir: &Path,
    nas_root: Option<&Path>,
    target_url: &str,
    volume: &str,
    backup: &str,
    step: Duration,
) -> anyhow::Result<i64> {
    let dir = target_dir(target_url, nas_root).map_err(anyhow::Error::msg)?;
    let bs = Backupstore::new(dir);
    let (_, src_volume) = ops::get(st, GROUP, "backups", NAMESPACE, backup)
        .and_then(|b| {
            b["status"]["volumeName"]
                .as_str()
                .map(|v| ((), v.to_string()))
        })
        .ok_or_else(|| anyhow::anyhow!("backup {backup} not found"))?;
    let cfg = bs.load_backup(&src_volume, backup)?;
    let mut img = vec![];
    let total = cfg.blocks.len().max(1);
    let mut done_blocks = 0usize;
    for pct in (10..=100).step_by(10) {
        // Blocks due by this progress step.
        let want = (total * pct).div_ceil(100).min(cfg.blocks.len());
        while done_blocks < want {
            let blk = &cfg.blocks[done_blocks];
            let data = bs.read_block(&src_volume, &blk.block_checksum)?;
            let end = blk.offset as usize + data.len();
            if img.len() < end {
                img.resize(end, 0);
            }
            img[blk.offset as usize..end].copy_from_slice(&data);
            done_blocks += 1;
        }
        while faults::load(data_dir).stuck_restore(volume) {
            std::thread::sleep(Duration::from_millis(50));
            if ops::get(st, GROUP, "volumes", NAMESPACE, volume).is_none() {
                anyhow::bail!("volume {volume} deleted during restore");
            }
        }
        std::thread::sleep(step);
        let progress = pct;
        if progress < 100 {
            let actual = img.len() as i64;
            let _ = ops::modify(
                st,
                GROUP,
                "volumes",
                NAMESPACE,
                volume,
                Some("status"),
                MANAGER,
                |o| {
                    o["status"]["actualSize"] = json!(actual);
                    set_condition(
                        &mut o["status"]["conditions"],
                        "Restore",
                        "True",
                        "RestoreInProgress",
                        &format!("restoring backup {backup}: restored {progress}%"),
                    );
                    true
                },
            );
        }
    }
    let files = nas::decode_image(&img)?;
    let target = volume_data_dir(data_dir, volume);
    let tmp = target.with_file_name("data.restoring");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    nas::write_files(&tmp, &files)?;
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&tmp, &target)?;
    Ok(img.len() as i64)
}
