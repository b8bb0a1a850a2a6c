//! Longhorn's view of the backup store, as piecemeal as longhorn-manager v1.11.3 builds it.
//! Modelled on (read at tag v1.11.3, not copied): `app/daemon.go` and
//! `datastore/longhorn.go` (`CreateOrUpdateDefaultBackupTarget`),
//! `controller/kubernetes_configmap_controller.go`, `controller/backup_target_controller.go`
//! (`reconcile`, `syncBackupVolume`, `BackupStoreTimer`), `controller/backup_volume_controller.go`
//! and `controller/backup_controller.go`. What a client observes, in order:
//!
//! 1. Nothing until the longhorn-manager pod is Ready: BackupTarget `default` is made by the
//!    manager's daemon at start from the ConfigMap `longhorn-default-resource` (no ConfigMap,
//!    no target: the daemon fails to start), one store call after the pod turns Ready. A later
//!    change of the ConfigMap rewrites the target's spec and sets `spec.syncRequestedAt`.
//! 2. The backup-target controller syncs when `status.lastSyncedAt` is unset or older than
//!    `spec.syncRequestedAt` (which the poll timer sets every `spec.pollInterval`, lab time,
//!    and clients set to ask for a sync). Empty URL: `available: false`, condition
//!    `Unavailable` "backup target URL is empty", every BackupVolume and Backup of the target
//!    removed. Store unreachable: `available: false`, `Unavailable` True with the mount error,
//!    `lastSyncedAt` untouched. First success: `available: true` and nothing else (that pass
//!    returns early). Next pass: every volume in the store gets a BackupVolume with spec and
//!    labels only (no status), the others are deleted, the existing ones get
//!    `spec.syncRequestedAt`; then `status.lastSyncedAt`.
//! 3. The backup-volume controller, per BackupVolume, when its `status.lastSyncedAt` is unset
//!    or older than `spec.syncRequestedAt`: creates the Backup CRs of the store's backups with
//!    labels, `spec.labels` (the access-mode label) and `spec.backupBlockSize` but no status,
//!    deletes those gone from the store; on its next call reads `volume.cfg` and fills the
//!    status (`lastBackupName`, `lastBackupAt`, `size`, `labels`, `storageClassName`, …,
//!    `lastSyncedAt`) and sets `spec.syncRequestedAt` on the newest Backup. (Upstream does
//!    both in one reconcile, two store calls apart; the lab gives each its own call.)
//! 4. The backup controller, per Backup with no `status.lastSyncedAt` (or an older one than
//!    `spec.syncRequestedAt`): one store call reads the backup's config, then `state:
//!    Completed`, `url`, `volumeSize`, `labels` (without `VolumeRecurringJobInfo`), ….
//!    A backup still being written (no `CreatedTime`) keeps no status.
//!
//! Each backupstore call takes [`super::LonghornEnv::store_call`] (or the fault switch
//! `slowBackupstoreMs`), and each object makes at most one call per that time, so every step
//! above is visible on its own for at least one call's time.
//! Left out: the backing-image and system-backup syncs, Backup CRs of backups *to* the store
//! (`spec.snapshotName` set), owner election, failed-backup TTLs, finalizers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    backup_url, backup_volume_name, parse_duration, target_dir, LonghornEnv, GROUP, MANAGER,
    NAMESPACE, VERSION,
};
use crate::k3s::controllers::ops::{self, set_condition};
use crate::k3s::defaults::{now, parse_time};
use crate::k3s::faults;
use crate::k3s::store::Store;
use crate::nas::{self, Backupstore};

/// The only backup target the lab serves.
const TARGET: &str = "default";
/// The label keys longhorn-manager puts on BackupVolumes and Backups (`types.go`).
const LABEL_TARGET: &str = "backup-target";
const LABEL_VOLUME: &str = "backup-volume";
const ACCESS_MODE_LABEL: &str = "longhorn.io/volume-access-mode";

#[derive(Default)]
pub(super) struct Sync {
    /// When each object (`bt`, `bv/<name>`, `b/<name>`) may make its next store call.
    due: HashMap<String, Instant>,
    /// BackupVolumes whose Backup CRs were listed; their `volume.cfg` read comes next.
    listed: HashSet<String>,
    /// Since when the manager pod has been Ready (None while it is not).
    manager_since: Option<Instant>,
    /// resourceVersion of `longhorn-default-resource` last applied.
    default_resource: Option<String>,
    /// When the poll timer last asked for a sync.
    polled: Option<Instant>,
}

/// Whether a longhorn-manager pod (label `app: longhorn-manager`) is Ready.
fn manager_ready(st: &Store) -> bool {
    ops::list(st, "", "pods", Some(NAMESPACE)).iter().any(|p| {
        p["metadata"]["labels"]["app"] == "longhorn-manager"
            && p["metadata"]["deletionTimestamp"].is_null()
            && p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    })
}

fn time_of(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    v.as_str().and_then(parse_time)
}

/// `lastSyncedAt` unset, or `syncRequestedAt` newer: the object's controller syncs.
fn sync_due(obj: &Value) -> bool {
    match time_of(&obj["status"]["lastSyncedAt"]) {
        None => true,
        Some(last) => time_of(&obj["spec"]["syncRequestedAt"]).is_some_and(|r| r > last),
    }
}

fn name_of(o: &Value) -> String {
    o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn owner(o: &Value, kind: &str) -> Value {
    json!([{"apiVersion": format!("{GROUP}/{VERSION}"), "kind": kind,
            "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]}])
}

impl Sync {
    fn call_time(env: &LonghornEnv) -> Duration {
        faults::load(&env.data_dir)
            .slow_backupstore_ms
            .map(Duration::from_millis)
            .unwrap_or(env.store_call)
    }

    /// Whether `key` may make a store call now (a small slack for the tick's jitter).
    fn ready(&self, key: &str) -> bool {
        self.due
            .get(key)
            .is_none_or(|t| Instant::now() + Duration::from_millis(20) >= *t)
    }

    fn spend(&mut self, key: &str, env: &LonghornEnv) {
        self.spend_n(key, 1, env);
    }

    /// `key`'s next call only after `n` calls' time.
    fn spend_n(&mut self, key: &str, n: u32, env: &LonghornEnv) {
        self.due
            .insert(key.to_string(), Instant::now() + Self::call_time(env) * n);
    }

    /// One pass of the manager's backup controllers.
    pub(super) fn pass(&mut self, st: &Store, env: &LonghornEnv) {
        if ops::rt(st, GROUP, "backuptargets").is_none() || !manager_ready(st) {
            self.manager_since = None;
            return;
        }
        let since = *self.manager_since.get_or_insert_with(Instant::now);
        // The daemon's start-up before it creates the default target.
        if since.elapsed() < Self::call_time(env) {
            return;
        }
        self.default_target(st);
        self.poll_timer(st, env);
        self.target(st, env);
        self.backup_volumes(st, env);
        self.backups(st, env);
    }

    /// `CreateOrUpdateDefaultBackupTarget`: at the daemon's start and on every change of the
    /// ConfigMap `longhorn-default-resource`.
    fn default_target(&mut self, st: &Store) {
        let Some(cm) = ops::get(st, "", "configmaps", NAMESPACE, "longhorn-default-resource")
        else {
            return; // the daemon fails to start without it
        };
        let rv = cm["metadata"]["resourceVersion"].as_str().map(String::from);
        let existing = ops::get(st, GROUP, "backuptargets", NAMESPACE, TARGET);
        if rv == self.default_resource && existing.is_some() {
            return;
        }
        let settings: BTreeMap<String, String> = cm["data"]["default-resource.yaml"]
            .as_str()
            .and_then(|t| serde_saphyr::from_str(t).ok())
            .unwrap_or_default();
        let given = |k: &str| settings.get(k).filter(|v| !v.is_empty()).cloned();
        let url = given("backup-target");
        let secret = given("backup-target-credential-secret");
        let poll = match given("backupstore-poll-interval").map(|p| p.parse::<u64>()) {
            Some(Ok(p)) => Some(format!("{p}s")),
            Some(Err(_)) => return, // ParseInt fails: the update is refused
            None => None,
        };
        match existing {
            None => {
                let created = ops::create(
                    st,
                    GROUP,
                    "backuptargets",
                    NAMESPACE,
                    json!({
                        "apiVersion": format!("{GROUP}/{VERSION}"), "kind": "BackupTarget",
                        "metadata": {"name": TARGET, "namespace": NAMESPACE},
                        "spec": {"backupTargetURL": url.unwrap_or_default(),
                                 "credentialSecret": secret.unwrap_or_default(),
                                 "pollInterval": poll.unwrap_or_else(|| "5m0s".into())},
                    }),
                    MANAGER,
                );
                if created.is_ok() {
                    self.default_resource = rv;
                }
            }
            Some(bt) => {
                let same = url
                    .as_ref()
                    .is_none_or(|u| bt["spec"]["backupTargetURL"] == *u)
                    && secret
                        .as_ref()
                        .is_none_or(|s| bt["spec"]["credentialSecret"] == *s)
                    && poll.as_ref().is_none_or(|p| {
                        parse_duration(bt["spec"]["pollInterval"].as_str().unwrap_or(""))
                            == parse_duration(p)
                    });
                self.default_resource = rv;
                if same {
                    return;
                }
                let _ = ops::modify(
                    st,
                    GROUP,
                    "backuptargets",
                    NAMESPACE,
                    TARGET,
                    None,
                    MANAGER,
                    |o| {
                        if let Some(u) = &url {
                            o["spec"]["backupTargetURL"] = json!(u);
                        }
                        if let Some(s) = &secret {
                            o["spec"]["credentialSecret"] = json!(s);
                        }
                        if let Some(p) = &poll {
                            o["spec"]["pollInterval"] = json!(p);
                        }
                        o["spec"]["syncRequestedAt"] = json!(now());
                        true
                    },
                );
            }
        }
    }

    /// `BackupStoreTimer`: every `pollInterval` (lab time) sets `spec.syncRequestedAt`.
    fn poll_timer(&mut self, st: &Store, env: &LonghornEnv) {
        let Some(bt) = ops::get(st, GROUP, "backuptargets", NAMESPACE, TARGET) else {
            return;
        };
        let poll =
            parse_duration(bt["spec"]["pollInterval"].as_str().unwrap_or("300s")).unwrap_or(300.0);
        if poll <= 0.0
            || bt["spec"]["backupTargetURL"]
                .as_str()
                .unwrap_or("")
                .is_empty()
        {
            self.polled = None;
            return;
        }
        let wall = Duration::from_secs_f64(poll / env.clock_speed.max(1) as f64);
        let last = *self.polled.get_or_insert_with(Instant::now);
        if last.elapsed() >= wall {
            self.polled = Some(Instant::now());
            let _ = ops::modify(
                st,
                GROUP,
                "backuptargets",
                NAMESPACE,
                TARGET,
                None,
                MANAGER,
                |o| {
                    o["spec"]["syncRequestedAt"] = json!(now());
                    true
                },
            );
        }
    }

    fn set_target_status(st: &Store, env: &LonghornEnv, f: impl FnOnce(&mut Value)) {
        let node = env.node_name.clone();
        let _ = ops::modify(
            st,
            GROUP,
            "backuptargets",
            NAMESPACE,
            TARGET,
            Some("status"),
            MANAGER,
            |o| {
                if !o["status"].is_object() {
                    o["status"] = json!({});
                }
                o["status"]["ownerID"] = json!(node);
                f(&mut o["status"]);
                true
            },
        );
    }

    /// The store directory behind the target, if it has a URL and is reachable.
    fn store_dir(st: &Store, env: &LonghornEnv) -> Option<(String, PathBuf)> {
        let bt = ops::get(st, GROUP, "backuptargets", NAMESPACE, TARGET)?;
        let url = bt["spec"]["backupTargetURL"].as_str()?.to_string();
        if url.is_empty() {
            return None;
        }
        let dir = target_dir(&url, env.nas_root.as_deref()).ok()?;
        Some((url, dir))
    }

    /// The backup-target controller's reconcile of `default`.
    fn target(&mut self, st: &Store, env: &LonghornEnv) {
        let Some(bt) = ops::get(st, GROUP, "backuptargets", NAMESPACE, TARGET) else {
            return;
        };
        if !sync_due(&bt) || !self.ready("bt") {
            return;
        }
        let url = bt["spec"]["backupTargetURL"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if url.is_empty() {
            Self::set_target_status(st, env, |s| {
                s["available"] = json!(false);
                set_condition(
                    &mut s["conditions"],
                    "Unavailable",
                    "True",
                    "Unavailable",
                    "backup target URL is empty",
                );
            });
            self.clean_up(st, &HashSet::new());
            return;
        }
        self.spend("bt", env);
        let dir = match target_dir(&url, env.nas_root.as_deref()) {
            Ok(dir) => dir,
            Err(msg) => {
                Self::set_target_status(st, env, |s| {
                    s["available"] = json!(false);
                    set_condition(
                        &mut s["conditions"],
                        "Unavailable",
                        "True",
                        "Unavailable",
                        &msg,
                    );
                });
                return;
            }
        };
        if bt["status"]["available"] != true {
            // The first successful look only makes the target available.
            Self::set_target_status(st, env, |s| {
                s["available"] = json!(true);
                set_condition(&mut s["conditions"], "Unavailable", "False", "", "");
            });
            return;
        }
        let sync_time = now();
        let in_store: HashSet<String> = Backupstore::new(&dir)
            .list_volumes()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let bvs = ops::list(st, GROUP, "backupvolumes", Some(NAMESPACE));
        let mut in_cluster = HashSet::new();
        for bv in &bvs {
            let vol = bv["spec"]["volumeName"].as_str().unwrap_or_default();
            if bv["spec"]["backupTargetName"] != TARGET {
                continue;
            }
            in_cluster.insert(vol.to_string());
            if in_store.contains(vol) {
                let _ = ops::modify(
                    st,
                    GROUP,
                    "backupvolumes",
                    NAMESPACE,
                    &name_of(bv),
                    None,
                    MANAGER,
                    |o| {
                        o["spec"]["syncRequestedAt"] = json!(sync_time);
                        true
                    },
                );
            }
        }
        for vol in in_store.difference(&in_cluster) {
            let name = backup_volume_name(vol, TARGET);
            let created = ops::create(
                st,
                GROUP,
                "backupvolumes",
                NAMESPACE,
                json!({
                    "apiVersion": format!("{GROUP}/{VERSION}"), "kind": "BackupVolume",
                    "metadata": {"name": name, "namespace": NAMESPACE,
                                 "labels": {LABEL_TARGET: TARGET, LABEL_VOLUME: vol},
                                 "ownerReferences": owner(&bt, "BackupTarget")},
                    "spec": {"backupTargetName": TARGET, "volumeName": vol},
                }),
                MANAGER,
            );
            if created.is_ok() {
                // Its controller picks it up on a later call of its own.
                self.spend(&format!("bv/{name}"), env);
            }
        }
        self.clean_up(st, &in_store);
        Self::set_target_status(st, env, |s| s["lastSyncedAt"] = json!(sync_time));
    }

    /// Deletes the target's BackupVolumes (and their Backups) whose volume is not in `keep`.
    fn clean_up(&mut self, st: &Store, keep: &HashSet<String>) {
        for bv in ops::list(st, GROUP, "backupvolumes", Some(NAMESPACE)) {
            let vol = bv["spec"]["volumeName"].as_str().unwrap_or_default();
            if bv["spec"]["backupTargetName"] == TARGET && !keep.contains(vol) {
                for b in ops::list(st, GROUP, "backups", Some(NAMESPACE)) {
                    if b["metadata"]["labels"][LABEL_VOLUME] == vol {
                        ops::delete(st, GROUP, "backups", NAMESPACE, &name_of(&b));
                    }
                }
                let name = name_of(&bv);
                self.listed.remove(&name);
                ops::delete(st, GROUP, "backupvolumes", NAMESPACE, &name);
            }
        }
    }

    /// The backup-volume controller: one store call per BackupVolume at a time.
    fn backup_volumes(&mut self, st: &Store, env: &LonghornEnv) {
        let Some((_, dir)) = Self::store_dir(st, env) else {
            return;
        };
        let bs = Backupstore::new(&dir);
        for bv in ops::list(st, GROUP, "backupvolumes", Some(NAMESPACE)) {
            let name = name_of(&bv);
            let key = format!("bv/{name}");
            if bv["spec"]["backupTargetName"] != TARGET
                || !bv["metadata"]["deletionTimestamp"].is_null()
                || !sync_due(&bv)
                || !self.ready(&key)
            {
                continue;
            }
            self.spend(&key, env);
            let vol = bv["spec"]["volumeName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !self.listed.contains(&name) {
                // BackupNameList, then the Backup CRs: labels and spec, no status.
                let Ok(names) = bs.list_backups(&vol) else {
                    continue;
                };
                let names: HashSet<String> = names.into_iter().collect();
                let mut existing = HashSet::new();
                for b in ops::list(st, GROUP, "backups", Some(NAMESPACE)) {
                    if b["metadata"]["labels"][LABEL_VOLUME] != vol.as_str() {
                        continue;
                    }
                    let bname = name_of(&b);
                    if names.contains(&bname) {
                        existing.insert(bname);
                    } else {
                        ops::delete(st, GROUP, "backups", NAMESPACE, &bname);
                    }
                }
                for bname in names.difference(&existing) {
                    let mut spec_labels = serde_json::Map::new();
                    if let Ok(cfg) = bs.load_backup(&vol, bname) {
                        if let Some(mode) = cfg.labels.get(ACCESS_MODE_LABEL) {
                            spec_labels.insert(ACCESS_MODE_LABEL.into(), json!(mode));
                        }
                    }
                    let created = ops::create(
                        st,
                        GROUP,
                        "backups",
                        NAMESPACE,
                        json!({
                            "apiVersion": format!("{GROUP}/{VERSION}"), "kind": "Backup",
                            "metadata": {"name": bname, "namespace": NAMESPACE,
                                         "labels": {LABEL_TARGET: TARGET, LABEL_VOLUME: vol},
                                         "ownerReferences": owner(&bv, "BackupVolume")},
                            "spec": {"labels": spec_labels, "backupBlockSize": nas::BLOCK_SIZE.to_string()},
                        }),
                        MANAGER,
                    );
                    if created.is_ok() {
                        // Behind the BackupVolume's own next call (its status): the
                        // backup controller's read of this backup comes later still.
                        self.spend_n(&format!("b/{bname}"), 2, env);
                    }
                }
                self.listed.insert(name);
                continue;
            }
            // BackupVolumeGet: the status from volume.cfg.
            self.listed.remove(&name);
            let Ok(cfg) = bs.load_volume(&vol) else {
                continue;
            };
            let t = now();
            let node = env.node_name.clone();
            let _ = ops::modify(
                st,
                GROUP,
                "backupvolumes",
                NAMESPACE,
                &name,
                Some("status"),
                MANAGER,
                |o| {
                    o["status"] = json!({
                        "ownerID": node, "lastBackupName": cfg.last_backup_name,
                        "lastBackupAt": cfg.last_backup_at, "size": cfg.size.to_string(),
                        "labels": cfg.labels, "storageClassName": cfg.storage_class_name,
                        "dataStored": (cfg.block_count * nas::BLOCK_SIZE as i64).to_string(),
                        "createdAt": cfg.created_time, "lastModificationTime": cfg.last_backup_at,
                        "lastSyncedAt": t, "backingImageName": cfg.backing_image_name,
                        "backingImageChecksum": cfg.backing_image_checksum, "messages": {},
                    });
                    true
                },
            );
            if !cfg.last_backup_name.is_empty() {
                let _ = ops::modify(
                    st,
                    GROUP,
                    "backups",
                    NAMESPACE,
                    &cfg.last_backup_name,
                    None,
                    MANAGER,
                    |o| {
                        o["spec"]["syncRequestedAt"] = json!(t);
                        true
                    },
                );
            }
        }
    }

    /// The backup controller, for Backups pulled from the store: one config read each.
    fn backups(&mut self, st: &Store, env: &LonghornEnv) {
        let Some((url, dir)) = Self::store_dir(st, env) else {
            return;
        };
        let bs = Backupstore::new(&dir);
        for b in ops::list(st, GROUP, "backups", Some(NAMESPACE)) {
            let name = name_of(&b);
            let key = format!("b/{name}");
            if b["metadata"]["labels"][LABEL_TARGET] != TARGET
                || !b["metadata"]["deletionTimestamp"].is_null()
                || b["spec"]["snapshotName"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
                || !sync_due(&b)
                || !self.ready(&key)
            {
                continue;
            }
            self.spend(&key, env);
            let vol = b["metadata"]["labels"][LABEL_VOLUME]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let Ok(cfg) = bs.load_backup(&vol, &name) else {
                continue;
            };
            if cfg.created_time.is_empty() {
                continue; // still being written: BackupGet answers "in progress"
            }
            let volume_size = bs.load_volume(&vol).map(|v| v.size).unwrap_or(0);
            let mut labels = cfg.labels.clone();
            labels.remove(nas::VOLUME_RECURRING_JOB_INFO);
            let node = env.node_name.clone();
            let t = now();
            let _ = ops::modify(
                st,
                GROUP,
                "backups",
                NAMESPACE,
                &name,
                Some("status"),
                MANAGER,
                |o| {
                    o["status"] = json!({
                        "ownerID": node, "state": "Completed",
                        "url": backup_url(&url, &name, &vol), "volumeName": vol,
                        "volumeSize": volume_size.to_string(), "size": cfg.size.to_string(),
                        "snapshotName": cfg.snapshot_name, "snapshotCreatedAt": cfg.snapshot_created_at,
                        "backupCreatedAt": cfg.created_time, "labels": labels,
                        "backupTargetName": TARGET, "progress": 100,
                        "lastSyncedAt": t, "compressionMethod": cfg.compression_method,
                        "messages": {}, "error": "",
                    });
                    true
                },
            );
        }
    }
}
