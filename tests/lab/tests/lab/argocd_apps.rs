//! Argo CD stand-in through kubectl: an Application becomes Synced/Healthy after a simulated
//! sync; the hard-refresh annotation is removed and `reconciledAt` advances; the
//! `argocdOutOfSync` switch keeps an app OutOfSync with a sync error until cleared.

use crate::nas_support;

use nas_support::{cond, Lab};
use rebox_lab::k3s::controllers::crds;
use rebox_lab::k3s::faults;
use serde_json::{json, Value};

fn app(lab: &Lab, name: &str) -> Value {
    lab.get(&["applications.argoproj.io", "-n", "argocd", name])
        .unwrap()
}

async fn synced(lab: &Lab, name: &str) -> Value {
    lab.wait(&format!("{name} Synced/Healthy"), 30, || {
        let a = app(lab, name);
        (a["status"]["sync"]["status"] == "Synced" && a["status"]["health"]["status"] == "Healthy")
            .then_some(a.clone())
            .ok_or(a["status"].to_string())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn argocd_apps_sync_refresh_and_stuck_switch() {
    let lab = Lab::start().await;
    lab.install_crds(&crds::argocd());
    lab.namespace("argocd");
    lab.ok(
        &[
            "create",
            "deployment",
            "argocd-application-controller",
            "-n",
            "argocd",
            "--image=quay.io/argoproj/argocd:v3.5.1",
        ],
        None,
    );
    let mk = |name: &str| {
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {"project": "default", "source": {"repoURL": "https://git.example/homelab.git", "path": format!("apps/{name}"), "targetRevision": "HEAD"},
                 "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
                 "syncPolicy": {"automated": {"prune": true, "selfHeal": true}}}})
    };
    lab.apply(&mk("immich"));
    let a = synced(&lab, "immich").await;
    assert_eq!(a["status"]["operationState"]["phase"], json!("Succeeded"));
    assert_eq!(a["status"]["sync"]["revision"].as_str().unwrap().len(), 40);

    // Hard refresh: annotation removed, reconciledAt advanced, still Synced.
    let before = a["status"]["reconciledAt"].as_str().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // reconciledAt has 1 s resolution
    lab.ok(
        &[
            "annotate",
            "applications.argoproj.io",
            "immich",
            "-n",
            "argocd",
            "argocd.argoproj.io/refresh=hard",
        ],
        None,
    );
    let a = lab
        .wait("refresh handled", 30, || {
            let a = app(&lab, "immich");
            (a["metadata"]["annotations"]["argocd.argoproj.io/refresh"].is_null()
                && a["status"]["reconciledAt"].as_str() > Some(before.as_str()))
            .then_some(a.clone())
            .ok_or(a.to_string())
        })
        .await;
    assert_eq!(a["status"]["sync"]["status"], json!("Synced"));

    // Stuck switch: OutOfSync with a sync error; a hard refresh is removed but does not help.
    faults::update(&lab.data_dir, |f| f.argocd_out_of_sync.push("hass".into())).unwrap();
    lab.apply(&mk("hass"));
    let a = lab
        .wait("hass stuck OutOfSync", 30, || {
            let a = app(&lab, "hass");
            (a["status"]["sync"]["status"] == "OutOfSync"
                && a["status"]["operationState"]["phase"] == "Failed")
                .then_some(a.clone())
                .ok_or(a["status"].to_string())
        })
        .await;
    assert!(cond(&a, "SyncError").unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("argocdOutOfSync"));
    lab.ok(
        &[
            "annotate",
            "applications.argoproj.io",
            "hass",
            "-n",
            "argocd",
            "argocd.argoproj.io/refresh=hard",
        ],
        None,
    );
    let a = lab
        .wait("refresh removed", 30, || {
            let a = app(&lab, "hass");
            a["metadata"]["annotations"]["argocd.argoproj.io/refresh"]
                .is_null()
                .then_some(a.clone())
                .ok_or(a.to_string())
        })
        .await;
    assert_eq!(a["status"]["sync"]["status"], json!("OutOfSync"));
    assert_eq!(
        app(&lab, "immich")["status"]["sync"]["status"],
        json!("Synced"),
        "other apps unaffected"
    );
    faults::update(&lab.data_dir, |f| f.argocd_out_of_sync.clear()).unwrap();
    let a = synced(&lab, "hass").await;
    assert!(
        a["status"]["conditions"].is_null(),
        "sync error cleared: {}",
        a["status"]
    );
}
