//! Controllers (issue 5): helm-controller and workloads through real kubectl against the
//! lab-k3s binary on 127.0.0.1:0. Waits are `kubectl wait` / `kubectl rollout status` with
//! timeouts, never sleeps.

use crate::k3s_support;

use k3s_support::Lab;

fn chart(name: &str, chart: &str, target: &str, values: &str) -> String {
    format!(
        "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: {name}\n  namespace: kube-system\nspec:\n  chart: {chart}\n  repo: https://charts.example.invalid\n  version: 1.0.0\n  targetNamespace: {target}\n  createNamespace: false\n  failurePolicy: abort\n  timeout: 600s\n  valuesContent: |-\n{values}\n"
    )
}

fn ns(lab: &Lab, name: &str) {
    lab.ok(&["create", "namespace", name], None);
}

#[test]
fn controllers_helmchart_installs_eso_and_rollout_restart_completes() {
    let lab = Lab::start();
    // k3s serves the HelmChart CRDs from its first start.
    lab.ok(
        &[
            "get",
            "crd",
            "helmcharts.helm.cattle.io",
            "helmchartconfigs.helm.cattle.io",
        ],
        None,
    );
    ns(&lab, "security");
    lab.ok(
        &["apply", "-f", "-"],
        Some(&chart(
            "external-secrets",
            "external-secrets",
            "security",
            "    installCRDs: true",
        )),
    );
    lab.ok(
        &[
            "-n",
            "kube-system",
            "wait",
            "--for=condition=Complete",
            "job/helm-install-external-secrets",
            "--timeout=60s",
        ],
        None,
    );
    let job = lab.json(&[
        "-n",
        "kube-system",
        "get",
        "job",
        "helm-install-external-secrets",
    ]);
    assert_eq!(
        job["metadata"]["labels"]["helmcharts.helm.cattle.io/chart"],
        "external-secrets"
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["serviceAccountName"],
        "helm-external-secrets"
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["restartPolicy"],
        "OnFailure"
    );
    let hc = lab.json(&["-n", "kube-system", "get", "helmchart", "external-secrets"]);
    assert_eq!(hc["status"]["jobName"], "helm-install-external-secrets");
    // The install pod's log.
    let logs = lab.ok(
        &[
            "-n",
            "kube-system",
            "logs",
            "job/helm-install-external-secrets",
        ],
        None,
    );
    assert!(logs.contains("STATUS: deployed"), "{logs}");
    // The chart's Deployments become available; its CRDs are served.
    for d in [
        "external-secrets",
        "external-secrets-webhook",
        "external-secrets-cert-controller",
    ] {
        lab.ok(
            &[
                "-n",
                "security",
                "rollout",
                "status",
                &format!("deployment/{d}"),
                "--timeout=60s",
            ],
            None,
        );
        lab.ok(
            &[
                "-n",
                "security",
                "wait",
                "--for=condition=Available",
                &format!("deployment/{d}"),
                "--timeout=60s",
            ],
            None,
        );
    }
    lab.ok(
        &[
            "get",
            "crd",
            "clustersecretstores.external-secrets.io",
            "externalsecrets.external-secrets.io",
        ],
        None,
    );
    let pods = lab.json(&[
        "-n",
        "security",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=external-secrets",
    ]);
    let before: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(before.len(), 1, "{pods}");
    assert!(before[0].starts_with("external-secrets-"), "{before:?}");
    assert_eq!(pods["items"][0]["status"]["phase"], "Running");

    // Rollout restart: new pods, and rollout status completes.
    lab.ok(
        &[
            "-n",
            "security",
            "rollout",
            "restart",
            "deployment/external-secrets",
        ],
        None,
    );
    let out = lab.ok(
        &[
            "-n",
            "security",
            "rollout",
            "status",
            "deployment/external-secrets",
            "--timeout=60s",
        ],
        None,
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = lab.json(&[
        "-n",
        "security",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=external-secrets",
    ]);
    let after: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(after.len(), 1, "{pods}");
    assert_ne!(before, after, "rollout restart made new pods");
    let d = lab.json(&["-n", "security", "get", "deployment", "external-secrets"]);
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
}

#[test]
fn controllers_helmchart_waits_for_its_namespace_and_installs_longhorn_and_argocd() {
    let lab = Lab::start();
    lab.ok(
        &["apply", "-f", "-"],
        Some(&chart(
            "longhorn",
            "longhorn",
            "longhorn-system",
            "    persistence:\n      defaultClass: true\n      defaultClassReplicaCount: 1",
        )),
    );
    // createNamespace false and no namespace: helm install fails, the Job does not complete.
    lab.fails(
        &[
            "-n",
            "kube-system",
            "wait",
            "--for=condition=Complete",
            "job/helm-install-longhorn",
            "--timeout=3s",
        ],
        None,
    );
    let logs = lab.ok(
        &[
            "-n",
            "kube-system",
            "logs",
            "-l",
            "helmcharts.helm.cattle.io/chart=longhorn",
        ],
        None,
    );
    assert!(
        logs.contains("namespaces \"longhorn-system\" not found"),
        "{logs}"
    );
    ns(&lab, "longhorn-system");
    lab.ok(
        &[
            "-n",
            "kube-system",
            "wait",
            "--for=condition=Complete",
            "job/helm-install-longhorn",
            "--timeout=60s",
        ],
        None,
    );
    lab.ok(
        &[
            "-n",
            "longhorn-system",
            "rollout",
            "status",
            "daemonset/longhorn-manager",
            "--timeout=60s",
        ],
        None,
    );
    lab.ok(
        &[
            "-n",
            "longhorn-system",
            "rollout",
            "status",
            "deployment/longhorn-driver-deployer",
            "--timeout=60s",
        ],
        None,
    );
    let sc = lab.json(&["get", "storageclass", "longhorn"]);
    assert_eq!(sc["provisioner"], "driver.longhorn.io");
    assert_eq!(sc["parameters"]["numberOfReplicas"], "1");

    ns(&lab, "argocd");
    lab.ok(
        &["apply", "-f", "-"],
        Some(&chart(
            "argo-cd",
            "argo-cd",
            "argocd",
            "    crds:\n      install: true",
        )),
    );
    lab.ok(
        &[
            "-n",
            "kube-system",
            "wait",
            "--for=condition=Complete",
            "job/helm-install-argo-cd",
            "--timeout=60s",
        ],
        None,
    );
    for d in [
        "deployment/argocd-server",
        "deployment/argocd-repo-server",
        "statefulset/argocd-application-controller",
    ] {
        lab.ok(
            &["-n", "argocd", "rollout", "status", d, "--timeout=60s"],
            None,
        );
    }
    lab.ok(
        &[
            "-n",
            "argocd",
            "get",
            "pod",
            "argocd-application-controller-0",
        ],
        None,
    );
    lab.ok(
        &[
            "get",
            "crd",
            "applications.argoproj.io",
            "appprojects.argoproj.io",
        ],
        None,
    );
}

#[test]
fn controllers_kubectl_create_deployment_becomes_available() {
    let lab = Lab::start();
    lab.ok(
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
        ],
        None,
    );
    lab.ok(
        &[
            "wait",
            "--for=condition=Available",
            "deployment/web",
            "--timeout=60s",
        ],
        None,
    );
    lab.ok(
        &["rollout", "status", "deployment/web", "--timeout=60s"],
        None,
    );
    let pods = lab.json(&["get", "pods", "-l", "app=web"]);
    assert_eq!(pods["items"].as_array().unwrap().len(), 2, "{pods}");
    let d = lab.json(&["get", "deployment", "web"]);
    assert_eq!(d["status"]["availableReplicas"], 2);
    // Scaling down removes a pod.
    lab.ok(
        &[
            "patch",
            "deployment/web",
            "-p",
            r#"{"spec":{"replicas":1}}"#,
        ],
        None,
    );
    lab.ok(
        &[
            "wait",
            "--for=jsonpath={.status.replicas}=1",
            "deployment/web",
            "--timeout=60s",
        ],
        None,
    );
}
