//! lab-k3s fidelity for CustomResourceDefinitions: CRDs served as soon as they are created
//! (Established), custom resources validated against their openAPIV3Schema (the real
//! upstream CRDs in ../shared/crds when present), strict unknown-field detection, pruning,
//! defaulting, status subresources, and CRD deletion taking its objects.

use crate::k3s_support;

use k3s_support::{shared_crd, Lab};

fn apply_crd_file(lab: &Lab, file: &str) -> bool {
    let Some(path) = shared_crd(file) else {
        return false;
    };
    // k3s serves the helm-controller CRDs itself (controllers::crds, manager "k3s"), so
    // replacing them with the upstream file takes ownership, as on a real k3s.
    lab.ok(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            path.to_str().unwrap(),
        ],
        None,
    );
    true
}

const VOLUME: &str = r#"
apiVersion: longhorn.io/v1beta2
kind: Volume
metadata: {name: vault-data-lh, namespace: longhorn-system}
spec:
  fromBackup: "nfs://nas:/export/lh?backup=backup-1&volume=pvc-1"
  size: "1073741824"
  numberOfReplicas: 1
  frontend: blockdev
  dataEngine: v1
  accessMode: rwo
"#;

#[test]
fn k3s_longhorn_volume_with_a_misspelled_field_is_refused_under_strict_validation() {
    let lab = Lab::start();
    if !apply_crd_file(&lab, "longhorn-v1.11.3.yaml") {
        return;
    }
    let crd = lab.json(&["get", "crd", "volumes.longhorn.io"]);
    let conds = crd["status"]["conditions"].as_array().unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True"),
        "{conds:?}"
    );
    lab.ok(&["create", "namespace", "longhorn-system"], None);
    let err = lab.fails(
        &["apply", "-f", "-"],
        Some(&VOLUME.replace("numberOfReplicas", "numberOfReplica")),
    );
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.numberOfReplica""#),
        "{err}"
    );
    let err = lab.fails(
        &["apply", "--server-side", "-f", "-"],
        Some(&VOLUME.replace("numberOfReplicas", "numberOfReplica")),
    );
    assert!(
        err.contains(".spec.numberOfReplica: field not declared in schema"),
        "server-side apply refuses undeclared fields (as a 500, like kube-apiserver): {err}"
    );
    let out = lab.ok(&["apply", "-f", "-"], Some(VOLUME));
    assert!(
        out.contains("volume.longhorn.io/vault-data-lh created"),
        "{out}"
    );
    // --validate=false is fieldValidation=Ignore: the unknown field is pruned, not stored.
    let loose = VOLUME
        .replace("vault-data-lh", "loose")
        .replace("numberOfReplicas: 1", "numberOfReplicas: 1\n  bogus: true");
    lab.ok(&["apply", "--validate=false", "-f", "-"], Some(&loose));
    assert!(lab.json(&[
        "get",
        "volumes.longhorn.io",
        "loose",
        "-n",
        "longhorn-system"
    ])["spec"]
        .get("bogus")
        .is_none());
}

#[test]
fn k3s_longhorn_volume_with_a_wrongly_typed_field_is_refused_by_the_crd_schema() {
    let lab = Lab::start();
    if !apply_crd_file(&lab, "longhorn-v1.11.3.yaml") {
        return;
    }
    lab.ok(&["create", "namespace", "longhorn-system"], None);
    let err = lab.fails(
        &["apply", "-f", "-"],
        Some(&VOLUME.replace("numberOfReplicas: 1", "numberOfReplicas: one")),
    );
    assert!(err.contains(r#"The Volume "vault-data-lh" is invalid"#) && err.contains("spec.numberOfReplicas: Invalid value: \"string\": spec.numberOfReplicas in body must be of type integer"), "{err}");
    let err = lab.fails(
        &["apply", "-f", "-"],
        Some(&VOLUME.replace("frontend: blockdev", "frontend: floppy")),
    );
    assert!(
        err.contains("spec.frontend: Unsupported value: \"floppy\""),
        "{err}"
    );
    let err = lab.fails(
        &[
            "get",
            "volumes.longhorn.io",
            "vault-data-lh",
            "-n",
            "longhorn-system",
        ],
        None,
    );
    assert!(err.contains("not found"), "{err}");
}

const STORE: &str = r#"
apiVersion: external-secrets.io/v1
kind: ClusterSecretStore
metadata: {name: k8s-secrets}
spec:
  provider:
    vault:
      server: http://vault.security:8200
      path: secret
      auth:
        kubernetes:
          mountPath: kubernetes
          role: external-secrets
          serviceAccountRef: {name: external-secrets, namespace: security}
"#;

#[test]
fn k3s_eso_cluster_secret_store_validated_and_defaulted_by_the_real_crd() {
    let lab = Lab::start();
    let Some(path) = shared_crd("external-secrets-v2.9.0-clustersecretstores.yaml") else {
        return;
    };
    // Client-side apply of a CRD this large fails on the real API server: the
    // last-applied-configuration annotation exceeds 256 KiB.
    let err = lab.fails(&["apply", "-f", path.to_str().unwrap()], None);
    assert!(err.contains("metadata.annotations: Too long"), "{err}");
    lab.ok(
        &["apply", "--server-side", "-f", path.to_str().unwrap()],
        None,
    );
    lab.ok(&["apply", "-f", "-"], Some(STORE));
    let store = lab.json(&["get", "clustersecretstore", "k8s-secrets"]);
    assert_eq!(
        store["spec"]["provider"]["vault"]["version"], "v2",
        "schema default applied"
    );
    let err = lab.fails(
        &["apply", "-f", "-"],
        Some(&STORE.replace("server:", "sever:")),
    );
    assert!(
        err.contains(r#"unknown field "spec.provider.vault.sever""#),
        "{err}"
    );
    let err = lab.fails(
        &["apply", "-f", "-"],
        Some(&STORE.replace("path: secret", "path: secret\n      version: v3")),
    );
    assert!(
        err.contains("spec.provider.vault.version: Unsupported value"),
        "{err}"
    );
    let err = lab.fails(
        &["apply", "-f", "-"],
        Some(&STORE.replace("role: external-secrets", "role: 7")),
    );
    assert!(err.contains("must be of type string"), "{err}");
}

#[test]
fn k3s_helmchart_and_argocd_application_crds_accept_their_objects() {
    let lab = Lab::start();
    if !apply_crd_file(&lab, "helm-controller-v0.17.7-helmcharts.yaml")
        || !apply_crd_file(&lab, "argo-cd-v3.5.1-application.yaml")
    {
        return;
    }
    let chart = r#"
apiVersion: helm.cattle.io/v1
kind: HelmChart
metadata: {name: longhorn, namespace: kube-system}
spec:
  chart: longhorn
  repo: https://charts.longhorn.io
  version: 1.9.3
  targetNamespace: longhorn-system
  createNamespace: true
  valuesContent: |-
    defaultSettings:
      defaultReplicaCount: 1
  set:
    persistence.defaultClassReplicaCount: 1
"#;
    lab.ok(&["apply", "--server-side", "-f", "-"], Some(chart));
    let err = lab.fails(
        &["apply", "-f", "-"],
        Some(&chart.replace("createNamespace: true", "createNamespace: yes please")),
    );
    assert!(
        err.contains("spec.createNamespace") && err.contains("must be of type boolean"),
        "{err}"
    );
    lab.ok(&["create", "namespace", "argocd"], None);
    let app = r#"
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: root, namespace: argocd, finalizers: [resources-finalizer.argocd.argoproj.io]}
spec:
  project: default
  source: {repoURL: "https://git.example/homelab.git", targetRevision: HEAD, path: apps}
  destination: {server: "https://kubernetes.default.svc", namespace: argocd}
  syncPolicy: {automated: {prune: true, selfHeal: true}}
"#;
    lab.ok(&["apply", "--server-side", "-f", "-"], Some(app));
    let err = lab.fails(
        &["apply", "-f", "-"],
        Some(&app.replace("targetRevision", "targetRevison")),
    );
    assert!(
        err.contains(r#"unknown field "spec.source.targetRevison""#),
        "{err}"
    );
    // A finalizer delays deletion: the object stays, marked for deletion, until it is removed.
    lab.ok(
        &[
            "delete",
            "application",
            "root",
            "-n",
            "argocd",
            "--wait=false",
        ],
        None,
    );
    let a = lab.json(&["get", "application", "root", "-n", "argocd"]);
    assert!(a["metadata"]["deletionTimestamp"].is_string(), "{a}");
    lab.ok(
        &[
            "patch",
            "application",
            "root",
            "-n",
            "argocd",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
    assert!(lab
        .fails(&["get", "application", "root", "-n", "argocd"], None)
        .contains("not found"));
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.lab.rebox.dev}
spec:
  group: lab.rebox.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {x-kubernetes-int-or-string: true}
              note: {type: string, nullable: true}
              mode: {type: string, default: fast, enum: [fast, slow]}
              extra: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status:
            type: object
            properties:
              ready: {type: boolean}
"#;

#[test]
fn k3s_crd_schema_features_status_subresource_and_crd_deletion() {
    let lab = Lab::start();
    lab.ok(&["apply", "-f", "-"], Some(WIDGET_CRD));
    let w = "apiVersion: lab.rebox.dev/v1\nkind: Widget\nmetadata: {name: a, namespace: default}\nspec:\n  size: 10%\n  note: null\n  extra: {anything: [1, 2], goes: here}\n";
    lab.ok(&["apply", "-f", "-"], Some(w));
    let got = lab.json(&["get", "wd", "a"]);
    assert_eq!(got["spec"]["size"], "10%");
    assert_eq!(got["spec"]["mode"], "fast");
    assert_eq!(
        got["spec"]["extra"]["anything"][1], 2,
        "preserve-unknown-fields keeps everything"
    );
    assert_eq!(got["metadata"]["generation"], 1);
    lab.ok(
        &["apply", "-f", "-"],
        Some(
            &w.replace("size: 10%", "size: 3")
                .replace("name: a", "name: b"),
        ),
    );
    let err = lab.fails(
        &["apply", "-f", "-"],
        Some(
            &w.replace("size: 10%", "size: [1]")
                .replace("name: a", "name: c"),
        ),
    );
    assert!(err.contains("spec.size"), "{err}");
    let err = lab.fails(
        &["apply", "-f", "-"],
        Some(&w.replace("  size: 10%\n", "").replace("name: a", "name: d")),
    );
    assert!(err.contains("spec.size: Required value"), "{err}");
    // Status only through /status.
    lab.ok(
        &[
            "patch",
            "wd",
            "a",
            "--type=merge",
            "-p",
            r#"{"status":{"ready":true}}"#,
        ],
        None,
    );
    assert!(lab.json(&["get", "wd", "a"])["status"]["ready"].is_null());
    lab.ok(
        &[
            "patch",
            "wd",
            "a",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"ready":true}}"#,
        ],
        None,
    );
    let got = lab.json(&["get", "wd", "a"]);
    assert_eq!(got["status"]["ready"], true);
    assert_eq!(
        got["metadata"]["generation"], 1,
        "status writes do not bump generation"
    );
    // Strategic merge patch is not available for custom resources.
    let err = lab.fails(
        &[
            "patch",
            "wd",
            "a",
            "--type=strategic",
            "-p",
            r#"{"spec":{"size":4}}"#,
        ],
        None,
    );
    assert!(
        err.contains("UnsupportedMediaType")
            || err.contains("unknown format")
            || err.contains("strategic merge patch"),
        "{err}"
    );
    // Deleting the CRD deletes its objects and stops serving the resource.
    lab.ok(&["delete", "crd", "widgets.lab.rebox.dev"], None);
    let err = lab.fails(&["get", "widgets.lab.rebox.dev"], None);
    assert!(
        err.contains("the server doesn't have a resource type") || err.contains("not found"),
        "{err}"
    );
    lab.ok(&["apply", "-f", "-"], Some(WIDGET_CRD));
    assert!(
        lab.ok(&["get", "wd", "-o", "name"], None).trim().is_empty(),
        "the old widgets went with the CRD"
    );
}
