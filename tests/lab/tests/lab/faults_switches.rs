//! Each fault switch of `lab-faults.json` produces the failure it names, seen through the API
//! with the real kubectl: 500, 409, a slow answer (kubectl's request timeout), counted rules,
//! a stuck restore (progress stops while switched on, finishes when cleared).

use crate::nas_support;

use std::time::Duration;

use nas_support::{cond, Lab};
use rebox_lab::k3s::faults::{self, ApiFault};
use rebox_lab::nas::NasFixture;
use serde_json::{json, Value};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_api_errors_and_slow_answers() {
    let lab = Lab::start().await;
    lab.ok(&["create", "configmap", "c1", "--from-literal=a=b"], None);
    faults::update(&lab.data_dir, |f| {
        f.api.push(ApiFault {
            method: Some("GET".into()),
            path: "/api/v1/namespaces/default/configmaps".into(),
            status: Some(500),
            times: Some(1),
            ..Default::default()
        });
        f.api.push(ApiFault {
            method: Some("PATCH".into()),
            path: "/api/v1/namespaces/default/configmaps/c1".into(),
            status: Some(409),
            ..Default::default()
        });
    })
    .unwrap();
    let o = lab.kubectl(&["get", "configmap", "c1"], None);
    assert!(
        !o.status.success() && stderr(&o).contains("Internal error occurred"),
        "500: {}",
        stderr(&o)
    );
    // times: 1 → the next GET passes.
    lab.ok(&["get", "configmap", "c1"], None);
    let o = lab.kubectl(&["label", "configmap", "c1", "x=y"], None);
    assert!(
        !o.status.success() && stderr(&o).contains("the object has been modified"),
        "409: {}",
        stderr(&o)
    );
    faults::update(&lab.data_dir, |f| f.api.clear()).unwrap();
    lab.ok(&["label", "configmap", "c1", "x=y"], None);
    // A slow answer: kubectl's request timeout fires.
    faults::update(&lab.data_dir, |f| {
        f.api.push(ApiFault {
            path: "/api/v1/namespaces/default/configmaps".into(),
            delay_ms: Some(3000),
            ..Default::default()
        });
    })
    .unwrap();
    let o = lab.kubectl(&["get", "configmap", "c1", "--request-timeout=1s"], None);
    assert!(
        !o.status.success(),
        "slow answer should time kubectl out: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).to_lowercase().contains("timeout") || stderr(&o).contains("deadline"),
        "{}",
        stderr(&o)
    );
    faults::save(&lab.data_dir, &faults::Faults::default()).unwrap();
    assert!(!faults::path(&lab.data_dir).exists(), "no fault = no file");
    lab.ok(&["get", "configmap", "c1", "--request-timeout=5s"], None);
    // A malformed switch file is refused loudly, never ignored.
    std::fs::write(faults::path(&lab.data_dir), r#"{"apiErrors": []}"#).unwrap();
    let o = lab.kubectl(&["get", "configmap", "c1"], None);
    assert!(
        !o.status.success() && stderr(&o).contains("lab-faults.json"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_stuck_restore_holds_progress_until_cleared() {
    let lab = Lab::start().await;
    let nas = NasFixture::new(lab.dir.join("nas"))
        .volume(
            "immich-db",
            "media",
            "immich-db",
            vec![("db".to_string(), vec![7u8; 3 << 20])],
            chrono::Utc::now(),
        )
        .build()
        .unwrap();
    lab.install_longhorn_chart(&Value::Null);
    faults::update(&lab.data_dir, |f| f.stuck_restores.push("immich-db".into())).unwrap();
    lab.wait("BackupTarget", 20, || {
        lab.get(&[
            "backuptargets.longhorn.io",
            "-n",
            "longhorn-system",
            "default",
        ])
        .ok_or("absent".into())
    })
    .await;
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
            &json!({"spec": {"backupTargetURL": format!("nfs://nas:{}", nas.root.display())}})
                .to_string(),
        ],
        None,
    );
    let b = lab
        .wait("Backup CR Completed", 20, || {
            let l = lab
                .get(&["backups.longhorn.io", "-n", "longhorn-system"])
                .unwrap();
            l["items"]
                .as_array()
                .unwrap()
                .first()
                .filter(|b| b["status"]["state"] == "Completed")
                .cloned()
                .ok_or(l.to_string())
        })
        .await;
    lab.apply(&json!({"apiVersion": "longhorn.io/v1beta2", "kind": "Volume",
        "metadata": {"name": "immich-db", "namespace": "longhorn-system"},
        "spec": {"fromBackup": b["status"]["url"], "size": b["status"]["volumeSize"], "numberOfReplicas": 1}}));
    let v = lab
        .wait("restore in progress", 20, || {
            let v = lab
                .get(&["volumes.longhorn.io", "-n", "longhorn-system", "immich-db"])
                .unwrap();
            cond(&v, "Restore")
                .filter(|c| c["reason"] == "RestoreInProgress")
                .map(|_| v.clone())
                .ok_or(v["status"].to_string())
        })
        .await;
    let rv = v["metadata"]["resourceVersion"].clone();
    // Stuck: many restore steps' worth of time later, nothing moved (the volume is unchanged).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let now = lab
            .get(&["volumes.longhorn.io", "-n", "longhorn-system", "immich-db"])
            .unwrap();
        assert_eq!(
            now["metadata"]["resourceVersion"], rv,
            "a stuck restore makes no progress: {}",
            now["status"]
        );
        assert_eq!(now["status"]["restoreRequired"], json!(true));
    }
    faults::update(&lab.data_dir, |f| f.stuck_restores.clear()).unwrap();
    lab.wait("restore finished after the switch is cleared", 30, || {
        let v = lab
            .get(&["volumes.longhorn.io", "-n", "longhorn-system", "immich-db"])
            .unwrap();
        (v["status"]["restoreRequired"] == false && v["status"]["state"] == "detached")
            .then_some(())
            .ok_or(v["status"].to_string())
    })
    .await;
}
