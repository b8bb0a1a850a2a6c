//! lab-k3s with kube-rs, the client rebox uses: kubeconfig loading and TLS (ring), server-side
//! apply with strict field validation, typed get, watcher-based waits, and the in-process
//! store event bus that part 2's controllers will use. The server runs in this process.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, LogParams, Patch, PatchParams, PostParams, ValidationDirective};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use rebox_lab::k3s::{Options, Running};
use serde_json::json;

async fn start(dir: &std::path::Path) -> (Running, kube::Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let opts = Options {
        data_dir: dir.join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        kubeconfig: dir.join("k3s.yaml"),
        kubeconfig_mode: 0o600,
        tls_san: vec![],
        node_name: "lab-node".into(),
    };
    let running = Running::start(opts).await.expect("lab-k3s starts");
    let kc = Kubeconfig::read_from(&running.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    (running, kube::Client::try_from(cfg).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k3s_kube_rs_server_side_apply_strict_and_watch() {
    let tmp = tempfile::tempdir().unwrap();
    let (running, client) = start(tmp.path()).await;
    let mut bus = running.store.subscribe();

    let node = Api::<Node>::all(client.clone())
        .get("lab-node")
        .await
        .unwrap();
    let ready = node.status.unwrap().conditions.unwrap();
    assert!(ready
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True"));

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut pp = PatchParams::apply("rebox");
    pp.field_validation = Some(ValidationDirective::Strict);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "state"}, "data": {"phase": "one"}});
    let created = cms.patch("state", &pp, &Patch::Apply(&cm)).await.unwrap();
    assert_eq!(created.data.unwrap()["phase"], "one");
    let ev = tokio::time::timeout(Duration::from_secs(5), bus.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ev.kind, ev.plural.as_str()),
        ("ADDED", "configmaps"),
        "the store bus sees API writes"
    );

    let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "state"}, "dataa": {}});
    let err = cms
        .patch("state", &pp, &Patch::Apply(&bad))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            // kube-apiserver reports an undeclared field in an apply body as a plain 500
            // (kubernetes/kubernetes#122480), whatever fieldValidation says.
            assert_eq!(s.code, 500);
            assert_eq!(
                s.message,
                "failed to create typed patch object (default/state; /v1, Kind=ConfigMap): .dataa: field not declared in schema"
            );
        }
        other => panic!("expected a 400 Status, got {other:?}"),
    }

    // A watcher-based wait sees a change made by another writer.
    let mut stream = watcher(
        cms.clone(),
        watcher::Config::default().fields("metadata.name=state"),
    )
    .boxed();
    let writer = {
        let cms = cms.clone();
        let pp = pp.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "state"}, "data": {"phase": "two"}});
            cms.patch("state", &pp, &Patch::Apply(&cm)).await.unwrap();
        })
    };
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(cm)) = ev {
                if cm.data.as_ref().is_some_and(|d| d["phase"] == "two") {
                    return true;
                }
            }
        }
        false
    })
    .await
    .expect("watch delivered the update in time");
    assert!(seen);
    writer.await.unwrap();

    // pods/log returns the text the (part 2) controllers store for a pod.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unseal-1"},
        "spec": {"containers": [{"name": "unseal", "image": "alpine"}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    assert!(
        pods.logs("unseal-1", &LogParams::default()).await.is_err(),
        "no log before the container ran"
    );
    running
        .store
        .set_pod_log("default", "unseal-1", "Vault unsealed\n")
        .unwrap();
    assert_eq!(
        pods.logs("unseal-1", &LogParams::default()).await.unwrap(),
        "Vault unsealed\n"
    );
}
