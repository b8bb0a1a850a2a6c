//! Longhorn stand-in through the API (real kubectl): a NAS fixture of three volumes shows up
//! as BackupVolumes/Backups with the fixture's times; a Volume with `fromBackup` restores
//! byte-identical data reporting progress, then binds to a recreated PV/PVC and is healthy
//! when a pod uses it; Vault's restored volume brings Vault back initialised and sealed; a
//! corrupt backup fails the restore as Longhorn reports it; a `longhorn` PVC is provisioned.

use crate::nas_support;
use crate::vault_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use nas_support::{cond, Lab};
use rebox_lab::k3s::controllers::longhorn::{backup_volume_name, volume_data_dir};
use rebox_lab::nas::NasFixture;
use serde_json::{json, Value};

/// The chart without a backup target; waits for the manager to make BackupTarget `default`.
async fn install_longhorn(lab: &Lab) {
    // The Longhorn stand-in runs already: lab-k3s starts it (controllers::spawn_all).
    lab.install_longhorn_chart(&Value::Null);
    lab.wait("BackupTarget default", 20, || {
        lab.get(&[
            "backuptargets.longhorn.io",
            "-n",
            "longhorn-system",
            "default",
        ])
        .ok_or("absent".into())
    })
    .await;
}

async fn set_target(lab: &Lab, url: &str) {
    lab.ok(
        &[
            "patch",
            "backuptargets.longhorn.io",
            "default",
            "-n",
            "longhorn-system",
            "--type",
            "merge",
            "-p",
            &json!({"spec": {"backupTargetURL": url}}).to_string(),
        ],
        None,
    );
}

fn restore_volume(lab: &Lab, name: &str, backup: &Value) {
    lab.apply(&json!({
        "apiVersion": "longhorn.io/v1beta2", "kind": "Volume",
        "metadata": {"name": name, "namespace": "longhorn-system"},
        "spec": {"fromBackup": backup["status"]["url"], "size": backup["status"]["volumeSize"],
                 "numberOfReplicas": 1, "frontend": "blockdev", "dataEngine": "v1", "accessMode": "rwo"},
    }));
}

fn backup_of(lab: &Lab, volume: &str) -> Value {
    let l = lab
        .get(&[
            "backups.longhorn.io",
            "-n",
            "longhorn-system",
            "-l",
            &format!("backup-volume={volume}"),
        ])
        .unwrap();
    let items = l["items"].as_array().unwrap().clone();
    items
        .into_iter()
        .max_by_key(|b| {
            b["status"]["snapshotCreatedAt"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .expect("a backup")
}

/// Waits until `n` Backups exist and every one is Completed; returns them.
async fn wait_completed(lab: &Lab, n: usize) -> Vec<Value> {
    lab.wait(&format!("{n} Backups Completed"), 20, || {
        let l = lab
            .get(&["backups.longhorn.io", "-n", "longhorn-system"])
            .unwrap();
        let items = l["items"].as_array().unwrap().clone();
        let done = items
            .iter()
            .filter(|b| b["status"]["state"] == "Completed")
            .count();
        (items.len() == n && done == n)
            .then_some(items.clone())
            .ok_or(format!("{} backups, {done} Completed", items.len()))
    })
    .await
}

async fn wait_restored(lab: &Lab, name: &str) -> Value {
    lab.wait(&format!("volume {name} restored and detached"), 60, || {
        let v = lab
            .get(&["volumes.longhorn.io", "-n", "longhorn-system", name])
            .ok_or("absent")?;
        if let Some(c) = cond(&v, "Restore").filter(|c| c["reason"] == "RestoreFailure") {
            panic!("restore of {name} failed: {c}");
        }
        if v["status"]["restoreRequired"] == false
            && v["status"]["state"] == "detached"
            && v["status"]["restoreInitiated"] == true
        {
            Ok(v)
        } else {
            Err(v["status"].to_string())
        }
    })
    .await
}

fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    fn walk(base: &std::path::Path, d: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            } else {
                out.push((
                    e.path().strip_prefix(base).unwrap().display().to_string(),
                    std::fs::read(e.path()).unwrap(),
                ));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn longhorn_fixture_volumes_restore_byte_identical_with_progress() {
    let lab = Lab::start().await;
    // Vault's data: a real bao raft dir, initialised (the process stopped before the backup).
    let vault_dir = lab.dir.join("vault-src");
    let v = rebox_lab::bao::Bao::start(vault_dir.clone()).await.unwrap();
    let init = vault_support::Vault::new(v.url()).init(1, 1).await;
    v.stop().await;
    let big: Vec<u8> = (0..(5u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let t_vault = Utc.with_ymd_and_hms(2026, 11, 20, 3, 0, 0).unwrap();
    let t_immich = Utc.with_ymd_and_hms(2026, 11, 19, 2, 30, 0).unwrap();
    let t_hass = Utc.with_ymd_and_hms(2026, 11, 18, 1, 15, 0).unwrap();
    let nas = NasFixture::new(lab.dir.join("nas/export"))
        .volume(
            "vault-data-lh",
            "security",
            "vault-data-lh",
            vault_dir.clone(),
            t_vault,
        )
        .volume(
            "immich-db",
            "media",
            "immich-db",
            vec![
                ("pgdata/base.bin".to_string(), big.clone()),
                ("PG_VERSION".to_string(), b"16\n".to_vec()),
            ],
            t_immich - chrono::Duration::days(1),
        )
        .volume(
            "immich-db",
            "media",
            "immich-db",
            vec![
                ("pgdata/base.bin".to_string(), big.clone()),
                ("PG_VERSION".to_string(), b"17\n".to_vec()),
            ],
            t_immich,
        )
        .volume(
            "hass-config",
            "home",
            "hass-config",
            vec![(
                "configuration.yaml".to_string(),
                b"homeassistant:\n".to_vec(),
            )],
            t_hass,
        )
        .build()
        .unwrap();

    install_longhorn(&lab).await;
    lab.wait("BackupTarget unavailable without a URL", 20, || {
        let bt = lab
            .get(&[
                "backuptargets.longhorn.io",
                "-n",
                "longhorn-system",
                "default",
            ])
            .unwrap();
        (bt["status"]["available"] == false
            && cond(&bt, "Unavailable")
                .is_some_and(|c| c["message"] == "backup target URL is empty"))
        .then_some(())
        .ok_or(bt["status"].to_string())
    })
    .await;
    set_target(&lab, &format!("nfs://nas.lab:{}", nas.root.display())).await;
    lab.wait("BackupTarget available", 20, || {
        let bt = lab
            .get(&[
                "backuptargets.longhorn.io",
                "-n",
                "longhorn-system",
                "default",
            ])
            .unwrap();
        (bt["status"]["available"] == true && bt["status"]["lastSyncedAt"].is_string())
            .then_some(())
            .ok_or(bt["status"].to_string())
    })
    .await;

    // BackupVolumes with the fixture's times and the original namespace/PVC.
    let bvs = lab
        .wait("3 BackupVolumes synced", 20, || {
            let l = lab
                .get(&["backupvolumes.longhorn.io", "-n", "longhorn-system"])
                .unwrap();
            let items = l["items"].as_array().unwrap();
            let synced = items
                .iter()
                .filter(|b| b["status"]["lastSyncedAt"].is_string())
                .count();
            (items.len() == 3 && synced == 3)
                .then_some(l.clone())
                .ok_or(format!("{} backup volumes, {synced} synced", items.len()))
        })
        .await;
    for (vol, ns, t) in [
        ("vault-data-lh", "security", t_vault),
        ("immich-db", "media", t_immich),
        ("hass-config", "home", t_hass),
    ] {
        let bv = bvs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["spec"]["volumeName"] == vol)
            .unwrap_or_else(|| panic!("no BackupVolume for {vol}"));
        assert_eq!(
            bv["metadata"]["name"],
            json!(backup_volume_name(vol, "default"))
        );
        assert_eq!(bv["metadata"]["labels"]["backup-volume"], json!(vol));
        assert_eq!(bv["metadata"]["labels"]["backup-target"], json!("default"));
        assert_eq!(
            bv["status"]["lastBackupAt"],
            json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "{bv}"
        );
        assert_eq!(
            bv["status"]["lastBackupName"],
            json!(nas.volume(vol).last_backup().name)
        );
        let ks: Value =
            serde_json::from_str(bv["status"]["labels"]["KubernetesStatus"].as_str().unwrap())
                .unwrap();
        assert_eq!(ks["namespace"], json!(ns));
        assert_eq!(ks["pvcName"], json!(vol));
    }
    wait_completed(&lab, 4).await;
    let backups = lab
        .get(&[
            "backups.longhorn.io",
            "-n",
            "longhorn-system",
            "-l",
            "backup-volume=immich-db",
        ])
        .unwrap();
    assert_eq!(
        backups["items"].as_array().unwrap().len(),
        2,
        "both immich backups: {backups}"
    );
    let b = backup_of(&lab, "immich-db");
    assert_eq!(b["status"]["state"], json!("Completed"));
    assert_eq!(
        b["status"]["snapshotCreatedAt"],
        json!(t_immich.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    );
    assert_eq!(
        b["status"]["url"],
        json!(format!(
            "nfs://nas.lab:{}?backup={}&volume=immich-db",
            nas.root.display(),
            b["metadata"]["name"].as_str().unwrap()
        ))
    );

    // Restore immich-db, watching the volume's events through kubectl.
    let mut watch = Command::new(nas_support::kubectl_bin())
        .args(["get", "volumes.longhorn.io", "-n", "longhorn-system", "--watch", "-o",
               "jsonpath={.metadata.name} {.status.restoreRequired} {.status.conditions[?(@.type==\"Restore\")].message}{\"\\n\"}"])
        .env("KUBECONFIG", &lab.k3s.kubeconfig)
        .env("HOME", lab.dir.join("home"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    restore_volume(&lab, "immich-db", &b);
    let v = wait_restored(&lab, "immich-db").await;
    assert_eq!(
        v["status"]["robustness"],
        json!("unknown"),
        "detached after the restore: {v}"
    );
    assert_eq!(v["status"]["kubernetesStatus"]["namespace"], json!("media"));
    assert_eq!(
        v["status"]["kubernetesStatus"]["pvcName"],
        json!("immich-db")
    );
    assert_eq!(v["status"]["lastBackup"], b["metadata"]["name"]);
    // Read the watch until it shows the finished restore (restoreRequired false).
    let mut lines = vec![];
    while !lines
        .iter()
        .any(|l: &String| l.starts_with("immich-db false"))
    {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => lines.push(l),
            Err(e) => panic!("kubectl watch ended without the finished restore ({e}): {lines:?}"),
        }
    }
    watch.kill().unwrap();
    let _ = watch.wait();
    let progress: Vec<u32> = lines
        .iter()
        .filter_map(|l| {
            l.split("restored ")
                .nth(1)
                .and_then(|p| p.trim_end_matches('%').parse().ok())
        })
        .collect();
    assert!(
        progress.iter().any(|p| *p > 0 && *p < 100),
        "intermediate progress seen: {lines:?}"
    );
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress only grows: {progress:?}"
    );
    let restored = files(&volume_data_dir(&lab.data_dir, "immich-db"));
    assert_eq!(
        restored,
        vec![
            ("PG_VERSION".to_string(), b"17\n".to_vec()),
            ("pgdata/base.bin".to_string(), big)
        ],
        "byte-identical newest backup"
    );

    // Vault's volume: restored, recreated PV/PVC bound, Vault initialised and sealed, the key opens it.
    let vb = backup_of(&lab, "vault-data-lh");
    restore_volume(&lab, "vault-data-lh", &vb);
    wait_restored(&lab, "vault-data-lh").await;
    assert_eq!(
        files(&volume_data_dir(&lab.data_dir, "vault-data-lh")),
        files(&vault_dir)
    );
    lab.namespace("security");
    lab.apply(&json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "vault-data-lh"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
                 "storageClassName": "longhorn-static", "volumeMode": "Filesystem",
                 "csi": {"driver": "driver.longhorn.io", "volumeHandle": "vault-data-lh", "fsType": "ext4"}}}));
    lab.apply(&json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "vault-data-lh", "namespace": "security"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "longhorn-static", "volumeName": "vault-data-lh",
                 "resources": {"requests": {"storage": "1Gi"}}}}));
    lab.wait("PVC Bound", 20, || {
        let pvc = lab
            .get(&["pvc", "-n", "security", "vault-data-lh"])
            .unwrap();
        let pv = lab.get(&["pv", "vault-data-lh"]).unwrap();
        (pvc["status"]["phase"] == "Bound"
            && pv["status"]["phase"] == "Bound"
            && pv["spec"]["claimRef"]["name"] == "vault-data-lh")
            .then_some(())
            .ok_or(format!("{} / {}", pvc["status"], pv["status"]))
    })
    .await;
    lab.apply(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "uses-vault-data", "namespace": "security"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "vault-data-lh"}}]}}));
    lab.wait("volume attached and healthy", 20, || {
        let v = lab
            .get(&[
                "volumes.longhorn.io",
                "-n",
                "longhorn-system",
                "vault-data-lh",
            ])
            .unwrap();
        (v["status"]["state"] == "attached"
            && v["status"]["robustness"] == "healthy"
            && v["status"]["kubernetesStatus"]["pvStatus"] == "Bound")
            .then_some(())
            .ok_or(v["status"].to_string())
    })
    .await;
    let vault = rebox_lab::bao::Bao::start(volume_data_dir(&lab.data_dir, "vault-data-lh"))
        .await
        .unwrap();
    let client = vault_support::Vault::new(vault.url());
    let s = client.status().await;
    assert_eq!(
        (s["initialized"].clone(), s["sealed"].clone()),
        (json!(true), json!(true)),
        "{s}"
    );
    let s = client.unseal_all(&init.keys).await;
    assert_eq!(
        s["sealed"],
        json!(false),
        "the original key opens the restored Vault: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn longhorn_corrupt_backup_fails_restore_like_longhorn() {
    let lab = Lab::start().await;
    let t = Utc::now() - chrono::Duration::hours(5);
    let nas = NasFixture::new(lab.dir.join("nas"))
        .volume(
            "hass-config",
            "home",
            "hass-config",
            vec![(
                "configuration.yaml".to_string(),
                b"homeassistant:\n".to_vec(),
            )],
            t,
        )
        .corrupt("hass-config")
        .build()
        .unwrap();
    install_longhorn(&lab).await;
    set_target(&lab, &format!("nfs://nas:{}/", nas.root.display())).await;
    let b = wait_completed(&lab, 1).await.remove(0);
    restore_volume(&lab, "hass-config", &b);
    let v = lab
        .wait("RestoreFailure", 30, || {
            let v = lab
                .get(&[
                    "volumes.longhorn.io",
                    "-n",
                    "longhorn-system",
                    "hass-config",
                ])
                .unwrap();
            cond(&v, "Restore")
                .filter(|c| c["reason"] == "RestoreFailure")
                .map(|_| v.clone())
                .ok_or(v["status"].to_string())
        })
        .await;
    let c = cond(&v, "Restore").unwrap();
    assert_eq!(c["status"], json!("False"));
    assert!(c["message"].as_str().unwrap().contains("checksum"), "{c}");
    assert_eq!(v["status"]["robustness"], json!("faulted"));
    assert_eq!(v["status"]["state"], json!("detached"));
    assert_eq!(v["status"]["restoreRequired"], json!(true));
    assert!(!volume_data_dir(&lab.data_dir, "hass-config")
        .join("configuration.yaml")
        .exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn longhorn_unreachable_target_and_dynamic_pvc() {
    let lab = Lab::start().await;
    install_longhorn(&lab).await;
    set_target(&lab, "nfs://nas:/no/such/export").await;
    lab.wait("target unavailable", 20, || {
        let bt = lab
            .get(&[
                "backuptargets.longhorn.io",
                "-n",
                "longhorn-system",
                "default",
            ])
            .unwrap();
        (bt["status"]["available"] == false
            && cond(&bt, "Unavailable").is_some_and(|c| c["status"] == "True"))
        .then_some(())
        .ok_or(bt["status"].to_string())
    })
    .await;
    // StorageClass `longhorn` is the chart's.
    lab.namespace("media");
    lab.apply(&json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "library", "namespace": "media"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "longhorn", "resources": {"requests": {"storage": "2Gi"}}}}));
    let pvc = lab
        .wait("dynamic PVC Bound", 20, || {
            let pvc = lab.get(&["pvc", "-n", "media", "library"]).unwrap();
            (pvc["status"]["phase"] == "Bound")
                .then_some(pvc.clone())
                .ok_or(pvc.to_string())
        })
        .await;
    let vol = pvc["spec"]["volumeName"].as_str().unwrap().to_string();
    assert_eq!(
        vol,
        format!("pvc-{}", pvc["metadata"]["uid"].as_str().unwrap())
    );
    let v = lab
        .wait("fresh volume", 20, || {
            let v = lab
                .get(&["volumes.longhorn.io", "-n", "longhorn-system", &vol])
                .ok_or("absent")?;
            (v["status"]["state"] == "detached")
                .then_some(v.clone())
                .ok_or(v.to_string())
        })
        .await;
    assert_eq!(v["spec"]["size"], json!((2i64 << 30).to_string()));
    assert_eq!(v["status"]["restoreRequired"], json!(false));
    assert!(volume_data_dir(&lab.data_dir, &vol).is_dir());
}

/// What a client sees of one store event: (kind, plural, object).
type Seen = (&'static str, String, Value);

fn no_status(o: &Value) -> bool {
    o["status"].as_object().is_none_or(|m| m.is_empty())
}

fn pod_ready(o: &Value) -> bool {
    o["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// longhorn-manager v1.11.3's order of events (`app/daemon.go`, `controller/backup_target_controller.go`,
/// `backup_volume_controller.go`, `backup_controller.go`), read from every event of the store:
/// BackupTarget `default` only after the manager's pod is Ready, made from the chart's
/// ConfigMap; available before any BackupVolume; BackupVolumes and Backups created without
/// status; a BackupVolume's status only after its Backups exist; the newest Backup
/// Completed only after its BackupVolume names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn longhorn_discovery_comes_piecemeal_as_upstream() {
    let lab = Lab::start().await;
    let t = Utc::now() - chrono::Duration::hours(2);
    let nas = NasFixture::new(lab.dir.join("nas"))
        .volume(
            "pvc-a",
            "apps",
            "a",
            &b"old"[..],
            t - chrono::Duration::hours(24),
        )
        .volume("pvc-a", "apps", "a", &b"new"[..], t)
        .volume("pvc-b", "apps", "b", &b"b"[..], t)
        .build()
        .unwrap();
    let url = format!("nfs://nas:{}", nas.root.display());
    let mut rx = lab.k3s.store.subscribe();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Seen>::new()));
    let rec = events.clone();
    let recorder = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(ev) => rec
                    .lock()
                    .unwrap()
                    .push((ev.kind, ev.plural.clone(), ev.object.clone())),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    panic!("the recorder lost {n} events")
                }
                Err(_) => return,
            }
        }
    });
    lab.install_longhorn_chart(&json!({"defaultBackupStore": {"backupTarget": url}}));
    wait_completed(&lab, 3).await;
    lab.wait("both BackupVolumes synced", 20, || {
        let l = lab
            .get(&["backupvolumes.longhorn.io", "-n", "longhorn-system"])
            .unwrap();
        let items = l["items"].as_array().unwrap();
        (items.len() == 2
            && items
                .iter()
                .all(|b| b["status"]["lastBackupName"].is_string()))
        .then_some(())
        .ok_or(l.to_string())
    })
    .await;
    recorder.abort();
    let ev = events.lock().unwrap().clone();
    let first = |what: &str, f: &dyn Fn(&Seen) -> bool| -> usize {
        ev.iter()
            .position(f)
            .unwrap_or_else(|| panic!("never seen: {what}"))
    };

    let manager_ready = first("the manager's pod Ready", &|(_, p, o)| {
        p == "pods" && o["metadata"]["labels"]["app"] == "longhorn-manager" && pod_ready(o)
    });
    let bt_added = first("BackupTarget default created", &|(k, p, _)| {
        *k == "ADDED" && p == "backuptargets"
    });
    assert!(
        manager_ready < bt_added,
        "BackupTarget default before the manager was Ready"
    );
    let bt = &ev[bt_added].2;
    assert_eq!(
        bt["spec"]["backupTargetURL"],
        json!(url),
        "from the ConfigMap: {bt}"
    );
    assert!(no_status(bt), "a new BackupTarget has no status: {bt}");
    let available = first("the target available", &|(_, p, o)| {
        p == "backuptargets" && o["status"]["available"] == true
    });
    assert!(
        ev[available].2["status"]["lastSyncedAt"].is_null(),
        "the first successful look only makes the target available: {}",
        ev[available].2
    );

    for vol in ["pvc-a", "pvc-b"] {
        let is_bv = |o: &Value| o["spec"]["volumeName"] == vol;
        let bv_added = first("BackupVolume created", &|(k, p, o)| {
            *k == "ADDED" && p == "backupvolumes" && is_bv(o)
        });
        assert!(
            bv_added > available,
            "{vol}: BackupVolume before the target was available"
        );
        assert!(
            no_status(&ev[bv_added].2),
            "{vol}: created with a status: {}",
            ev[bv_added].2
        );
        let bv_status = first("BackupVolume status", &|(_, p, o)| {
            p == "backupvolumes" && is_bv(o) && o["status"]["lastBackupName"].is_string()
        });
        let newest = nas.volume(vol).last_backup().name.clone();
        assert_eq!(ev[bv_status].2["status"]["lastBackupName"], json!(newest));
        for b in &nas.volume(vol).backups {
            let b_added = first("Backup created", &|(k, p, o)| {
                *k == "ADDED" && p == "backups" && o["metadata"]["name"] == b.name.as_str()
            });
            let o = &ev[b_added].2;
            assert!(no_status(o), "{}: created with a status: {o}", b.name);
            assert_eq!(o["metadata"]["labels"]["backup-volume"], json!(vol));
            assert_eq!(o["metadata"]["labels"]["backup-target"], json!("default"));
            assert_eq!(
                o["spec"]["labels"]["longhorn.io/volume-access-mode"],
                json!("rwo")
            );
            assert!(
                b_added > bv_added && b_added < bv_status,
                "{}: Backup CR out of order",
                b.name
            );
            let completed = first("Backup Completed", &|(_, p, o)| {
                p == "backups"
                    && o["metadata"]["name"] == b.name.as_str()
                    && o["status"]["state"] == "Completed"
            });
            assert!(
                completed > bv_status,
                "{}: Completed before its BackupVolume had a status",
                b.name
            );
            let done = &ev[completed].2["status"];
            assert!(done["url"].as_str().unwrap().contains(&b.name), "{done}");
            assert_eq!(done["volumeSize"], json!(nas.volume(vol).size.to_string()));
        }
    }
}

/// `restoreVolumeRecurringJob: enabled` brings back the source volume's recurring jobs
/// (created when missing) and labels; `disabled` does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn longhorn_restore_brings_back_recurring_jobs_when_enabled() {
    let lab = Lab::start().await;
    let t = Utc::now() - chrono::Duration::hours(1);
    let jobs = json!({
        "nightly": {"jobSpec": {"name": "nightly", "task": "backup", "cron": "0 2 * * *", "retain": 7,
                                "concurrency": 1, "groups": [], "labels": {}}, "fromJob": true},
        "weekly": {"jobSpec": {"name": "weekly", "task": "snapshot", "cron": "0 3 * * 0", "retain": 2,
                               "concurrency": 1, "groups": ["critical"]}, "fromJob": false,
                   "fromGroup": ["critical"]},
    });
    let nas = NasFixture::new(lab.dir.join("nas"))
        .volume("pvc-db", "apps", "db", &b"db"[..], t)
        .recurring_jobs("pvc-db", jobs.clone())
        .access_mode("pvc-db", "rwx")
        .volume("pvc-other", "apps", "other", &b"other"[..], t)
        .recurring_jobs("pvc-other", jobs)
        .build()
        .unwrap();
    lab.install_longhorn_chart(
        &json!({"defaultBackupStore": {"backupTarget": format!("nfs://nas:{}", nas.root.display())}}),
    );
    wait_completed(&lab, 2).await;
    let db = backup_of(&lab, "pvc-db");
    assert_eq!(
        db["status"]["labels"]["longhorn.io/volume-access-mode"],
        json!("rwx"),
        "{db}"
    );
    assert!(
        db["status"]["labels"]["VolumeRecurringJobInfo"].is_null(),
        "the backup controller drops the recurring-job label from a Backup: {db}"
    );
    lab.wait("BackupVolume labels", 20, || {
        let l = lab
            .get(&["backupvolumes.longhorn.io", "-n", "longhorn-system"])
            .unwrap();
        l["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["status"]["labels"]["VolumeRecurringJobInfo"].is_string())
            .then_some(())
            .ok_or(l.to_string())
    })
    .await;
    for (name, mode) in [("pvc-db", "enabled"), ("pvc-other", "disabled")] {
        let b = backup_of(&lab, name);
        lab.apply(&json!({
            "apiVersion": "longhorn.io/v1beta2", "kind": "Volume",
            "metadata": {"name": name, "namespace": "longhorn-system"},
            "spec": {"fromBackup": b["status"]["url"], "size": b["status"]["volumeSize"],
                     "numberOfReplicas": 1, "restoreVolumeRecurringJob": mode},
        }));
        wait_restored(&lab, name).await;
    }
    let v = lab
        .get(&["volumes.longhorn.io", "-n", "longhorn-system", "pvc-db"])
        .unwrap();
    let labels = &v["metadata"]["labels"];
    assert_eq!(
        labels["recurring-job.longhorn.io/nightly"],
        json!("enabled"),
        "{v}"
    );
    assert_eq!(
        labels["recurring-job-group.longhorn.io/critical"],
        json!("enabled"),
        "{v}"
    );
    assert!(
        labels["recurring-job.longhorn.io/weekly"].is_null(),
        "weekly came from a group: {v}"
    );
    let nightly = lab
        .get(&[
            "recurringjobs.longhorn.io",
            "-n",
            "longhorn-system",
            "nightly",
        ])
        .expect("RecurringJob nightly created");
    assert_eq!(nightly["spec"]["cron"], json!("0 2 * * *"));
    let other = lab
        .get(&["volumes.longhorn.io", "-n", "longhorn-system", "pvc-other"])
        .unwrap();
    assert!(
        other["metadata"]["labels"]
            .as_object()
            .is_none_or(|l| l.keys().all(|k| !k.starts_with("recurring-job"))),
        "disabled: no recurring-job labels: {other}"
    );
}
