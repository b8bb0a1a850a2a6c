//! ESO stand-in through kubectl: the ClusterSecretStore is Ready only after a real
//! Kubernetes-auth login to Vault (refused: InvalidProviderConfig, "unable to create client"),
//! degraded when Vault is sealed, STAYS degraded after the unseal until the three ESO
//! Deployments are rollout-restarted; an ExternalSecret syncs its Secret from Vault's KV v2.

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
    // Vault as rebox sets it up for ESO, except that a Vault on the host (not in a pod) has
    // no service-account files: the API server and its CA are named. No reviewer JWT: Vault
    // reviews the login's own token, so ESO's ServiceAccount may create TokenReviews.
    let root = init.root_token.as_str();
    let ok = |what: &str, (code, v): (u16, serde_json::Value)| {
        assert!(code == 200 || code == 204, "{what}: {code} {v}");
    };
    use reqwest::Method;
    ok(
        "mount kv",
        client
            .call(
                Method::POST,
                "/v1/sys/mounts/secret",
                Some(json!({"type": "kv", "options": {"version": "2"}})),
                Some(root),
            )
            .await,
    );
    ok(
        "write kv",
        client
            .call(
                Method::POST,
                "/v1/secret/data/cloudflare",
                Some(json!({"data": {"api-token": "cf-token-123"}})),
                Some(root),
            )
            .await,
    );
    ok(
        "enable auth",
        client
            .call(
                Method::POST,
                "/v1/sys/auth/kubernetes",
                Some(json!({"type": "kubernetes"})),
                Some(root),
            )
            .await,
    );
    let ca = std::fs::read_to_string(lab.data_dir.join("server/tls/server-ca.crt")).unwrap();
    ok("auth config", client.call(Method::POST, "/v1/auth/kubernetes/config", Some(json!({
        "kubernetes_host": format!("https://{}", lab.k3s.addr), "kubernetes_ca_cert": ca, "disable_local_ca_jwt": true})), Some(root)).await);
    ok(
        "policy",
        client
            .call(
                Method::POST,
                "/v1/sys/policies/acl/external-secrets",
                Some(json!({
        "policy": "path \"secret/data/*\" { capabilities = [\"read\"] }"})),
                Some(root),
            )
            .await,
    );
    // The role is bound to a ServiceAccount ESO does not run as: the login is refused.
    ok("role", client.call(Method::POST, "/v1/auth/kubernetes/role/external-secrets", Some(json!({
        "bound_service_account_names": ["someone-else"], "bound_service_account_namespaces": ["security"],
        "token_policies": ["external-secrets"]})), Some(root)).await);
    lab.apply(&json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "eso-tokenreview"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "security"}]}));
    lab.apply(&json!({"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore", "metadata": {"name": "k8s-secrets"},
        "spec": {"provider": {"vault": {"server": "http://vault.security:8200", "path": "secret", "version": "v2",
                 "auth": {"kubernetes": {"mountPath": "kubernetes", "role": "external-secrets"}}}}}}));
    let s = store_ready(&lab, "False").await;
    let c = cond(&s, "Ready").unwrap();
    assert_eq!(
        (c["reason"].clone(), c["message"].clone()),
        (
            json!("InvalidProviderConfig"),
            json!("unable to create client")
        ),
        "{s}"
    );
    // Bound to the controller's ServiceAccount (`default`: these Deployments name none), and
    // ESO restarted: the store validates through a real login.
    ok("role", client.call(Method::POST, "/v1/auth/kubernetes/role/external-secrets", Some(json!({
        "bound_service_account_names": ["default"], "bound_service_account_namespaces": ["security"],
        "token_policies": ["external-secrets"]})), Some(root)).await);
    for d in eso::DEPLOYMENTS {
        lab.ok(
            &[
                "rollout",
                "restart",
                &format!("deployment/{d}"),
                "-n",
                "security",
            ],
            None,
        );
    }
    let s = store_ready(&lab, "True").await;
    assert_eq!(cond(&s, "Ready").unwrap()["reason"], json!("Valid"));

    // ExternalSecret from Vault's KV v2.
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
