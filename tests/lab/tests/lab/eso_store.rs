//! ESO stand-in through kubectl: the ClusterSecretStore is Ready with Vault unsealed,
//! degraded when Vault is sealed, STAYS degraded after the unseal until the three ESO
//! Deployments are rollout-restarted; an ExternalSecret syncs its Secret from the lab KV.

use crate::nas_support;
use crate::vault_support;

use base64::Engine;
use nas_support::{cond, Lab};
use rebox_lab::k3s::controllers::{crds, eso, workloads::NODE_ADDRESS_ANNOTATION};
use serde_json::json;

async fn store_ready(lab: &Lab, want: &str) -> serde_json::Value {
    lab.wait(&format!("store Ready={want}"), 30, || {
        let s = lab
            .get(&["clustersecretstores.external-secrets.io", "k8s-secrets"])
            .unwrap();
        cond(&s, "Ready")
            .filter(|c| c["status"] == want)
            .map(|_| s.clone())
            .ok_or(s["status"].to_string())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eso_store_follows_vault_and_stays_degraded_until_restart() {
    let lab = Lab::start().await;
    let vdir = lab.dir.join("vault");
    let vault = rebox_lab::bao::Bao::start(vdir.clone()).await.unwrap();
    let client = vault_support::Vault::new(vault.url());
    let init = client.init(1, 1).await;
    client.unseal_all(&init.keys).await;

    lab.install_crds(&crds::eso());
    lab.namespace("security");
    lab.apply(&json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "vault", "namespace": "security",
        "annotations": {NODE_ADDRESS_ANNOTATION: vault.addr.to_string()}},
        "spec": {"ports": [{"name": "http", "port": 8200, "targetPort": 8200}]}}));
    for d in eso::DEPLOYMENTS {
        lab.ok(
            &[
                "create",
                "deployment",
                d,
                "-n",
                "security",
                "--image=ghcr.io/external-secrets/external-secrets:v2.9.0",
            ],
            None,
        );
    }
    lab.apply(&json!({"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore", "metadata": {"name": "k8s-secrets"},
        "spec": {"provider": {"vault": {"server": "http://vault.security:8200", "path": "secret", "version": "v2",
                 "auth": {"kubernetes": {"mountPath": "kubernetes", "role": "external-secrets"}}}}}}));
    let s = store_ready(&lab, "True").await;
    assert_eq!(cond(&s, "Ready").unwrap()["reason"], json!("Valid"));

    // ExternalSecret from the lab KV.
    std::fs::create_dir_all(eso::kv_file(&lab.data_dir).parent().unwrap()).unwrap();
    std::fs::write(
        eso::kv_file(&lab.data_dir),
        json!({"cloudflare": {"api-token": "cf-token-123"}}).to_string(),
    )
    .unwrap();
    lab.namespace("cert-manager");
    lab.apply(&json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": {"name": "cloudflare", "namespace": "cert-manager"},
        "spec": {"secretStoreRef": {"kind": "ClusterSecretStore", "name": "k8s-secrets"}, "target": {"name": "cloudflare-api-token"},
                 "data": [{"secretKey": "api-token", "remoteRef": {"key": "cloudflare", "property": "api-token"}}]}}));
    lab.wait("ExternalSecret synced", 30, || {
        let es = lab
            .get(&[
                "externalsecrets.external-secrets.io",
                "-n",
                "cert-manager",
                "cloudflare",
            ])
            .unwrap();
        cond(&es, "Ready")
            .filter(|c| c["reason"] == "SecretSynced")
            .map(|_| ())
            .ok_or(es["status"].to_string())
    })
    .await;
    let sec = lab
        .get(&["secret", "-n", "cert-manager", "cloudflare-api-token"])
        .unwrap();
    let v = base64::engine::general_purpose::STANDARD
        .decode(sec["data"]["api-token"].as_str().unwrap())
        .unwrap();
    assert_eq!(v, b"cf-token-123");

    // Vault sealed → the store degrades.
    client.seal(&init.root_token).await;
    let s = store_ready(&lab, "False").await;
    assert_eq!(
        cond(&s, "Ready").unwrap()["reason"],
        json!("ValidationFailed")
    );
    lab.wait("ExternalSecret degraded", 30, || {
        let es = lab
            .get(&[
                "externalsecrets.external-secrets.io",
                "-n",
                "cert-manager",
                "cloudflare",
            ])
            .unwrap();
        cond(&es, "Ready")
            .filter(|c| c["reason"] == "SecretSyncedError")
            .map(|_| ())
            .ok_or(es["status"].to_string())
    })
    .await;
    // Unsealed again: the store stays degraded (watch it for a while)...
    let s = client.unseal_all(&init.keys).await;
    assert_eq!(s["sealed"], json!(false));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < until {
        let s = lab
            .get(&["clustersecretstores.external-secrets.io", "k8s-secrets"])
            .unwrap();
        assert_eq!(
            cond(&s, "Ready").unwrap()["status"],
            json!("False"),
            "stays degraded until ESO restarts: {}",
            s["status"]
        );
    }
    // ...restarting only one deployment is not enough...
    lab.ok(
        &[
            "rollout",
            "restart",
            "deployment/external-secrets",
            "-n",
            "security",
        ],
        None,
    );
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < until {
        let s = lab
            .get(&["clustersecretstores.external-secrets.io", "k8s-secrets"])
            .unwrap();
        assert_eq!(
            cond(&s, "Ready").unwrap()["status"],
            json!("False"),
            "{}",
            s["status"]
        );
    }
    // ...restarting the three (what eso-recovery does) brings it back.
    lab.ok(
        &[
            "rollout",
            "restart",
            "deployment/external-secrets",
            "deployment/external-secrets-webhook",
            "deployment/external-secrets-cert-controller",
            "-n",
            "security",
        ],
        None,
    );
    store_ready(&lab, "True").await;
    drop(vault);
}
