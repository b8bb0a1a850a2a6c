//! ESO's admission webhook as kube-apiserver calls it (failurePolicy Fail): a
//! ClusterSecretStore is refused while the webhook's Deployment is not Available
//! ("connection refused"), then while the cert-controller has not injected the CA bundle
//! (x509), and accepted once both are done; without ESO's webhook Service nothing is called.

use crate::nas_support;

use nas_support::{cond, Lab};
use rebox_lab::k3s::controllers::crds;
use serde_json::json;

fn store() -> String {
    json!({"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore", "metadata": {"name": "k8s-secrets"},
        "spec": {"provider": {"vault": {"server": "http://vault.security:8200", "path": "secret", "version": "v2",
                 "auth": {"kubernetes": {"mountPath": "kubernetes", "role": "external-secrets"}}}}}})
    .to_string()
}

async fn available(lab: &Lab, name: &str) {
    lab.wait(&format!("Deployment {name} Available"), 60, || {
        let d = lab
            .get(&["deployment", "-n", "external-secrets", name])
            .unwrap();
        cond(&d, "Available")
            .filter(|c| c["status"] == "True")
            .map(|_| ())
            .ok_or(d["status"].to_string())
    })
    .await
}

fn create_deployment(lab: &Lab, name: &str) {
    lab.ok(
        &[
            "create",
            "deployment",
            name,
            "-n",
            "external-secrets",
            "--image=ghcr.io/external-secrets/external-secrets:v2.9.0",
        ],
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eso_webhook_refuses_stores_until_it_serves_with_its_ca_injected() {
    let lab = Lab::start().await;
    lab.install_crds(&crds::eso());
    lab.namespace("external-secrets");
    lab.ok(
        &[
            "create",
            "service",
            "clusterip",
            "external-secrets-webhook",
            "-n",
            "external-secrets",
            "--tcp=443:10250",
        ],
        None,
    );
    let refused = |want: &str| {
        let out = lab.kubectl(&["apply", "-f", "-"], Some(&store()));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "accepted while the webhook cannot serve"
        );
        assert!(
            stderr.contains(
                "failed calling webhook \"validate.clustersecretstore.external-secrets.io\""
            ) && stderr.contains(want),
            "{stderr}"
        );
    };
    refused("connect: connection refused");

    create_deployment(&lab, "external-secrets-webhook");
    available(&lab, "external-secrets-webhook").await;
    refused("x509: certificate signed by unknown authority");

    // The cert-controller injects the CA bundle a while after it is up: accepted then.
    create_deployment(&lab, "external-secrets-cert-controller");
    available(&lab, "external-secrets-cert-controller").await;
    lab.wait("the store accepted", 60, || {
        let out = lab.kubectl(&["apply", "-f", "-"], Some(&store()));
        out.status
            .success()
            .then_some(())
            .ok_or(String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await;
    assert!(lab
        .get(&["clustersecretstores.external-secrets.io", "k8s-secrets"])
        .is_some());
}
