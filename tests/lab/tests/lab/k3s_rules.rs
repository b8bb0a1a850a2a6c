//! lab-k3s fidelity for the API server's rules beyond CRUD: immutable fields, Service
//! addresses, label and field selectors, field validation Warn, server dry-run,
//! generateName, pods/log before a container runs.

use crate::k3s_support;

use k3s_support::Lab;

const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: default, labels: {app: api, tier: back}}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: "busybox:1.36"}]
"#;

#[test]
fn k3s_immutable_fields_are_refused_on_update() {
    let lab = Lab::start();
    lab.ok(&["apply", "-f", "-"], Some(DEPLOY));
    let moved = DEPLOY
        .replace(
            "matchLabels: {app: api}",
            "matchLabels: {app: api, v: \"2\"}",
        )
        .replace("labels: {app: api}}", "labels: {app: api, v: \"2\"}}");
    let err = lab.fails(&["apply", "-f", "-"], Some(&moved));
    assert!(
        err.contains("spec.selector") && err.contains("field is immutable"),
        "{err}"
    );
    let pvc = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: vault-data-lh, namespace: default}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: longhorn\n  resources: {requests: {storage: 1Gi}}\n";
    lab.ok(&["apply", "-f", "-"], Some(pvc));
    assert_eq!(
        lab.json(&["get", "pvc", "vault-data-lh"])["status"]["phase"],
        "Pending"
    );
    let err = lab.fails(
        &["apply", "-f", "-"],
        Some(&pvc.replace("longhorn", "local-path")),
    );
    assert!(err.contains("spec is immutable after creation"), "{err}");
    lab.ok(&["apply", "-f", "-"], Some(&pvc.replace("1Gi", "2Gi")));
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: default}\ntype: Opaque\ndata: {k: dg==}\n";
    lab.ok(&["apply", "-f", "-"], Some(secret));
    let err = lab.fails(
        &["apply", "-f", "-"],
        Some(&secret.replace("Opaque", "kubernetes.io/tls")),
    );
    assert!(
        err.contains("type: Invalid value") && err.contains("field is immutable"),
        "{err}"
    );
    let frozen = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen, namespace: default}\nimmutable: true\ndata: {k: v}\n";
    lab.ok(&["apply", "-f", "-"], Some(frozen));
    let err = lab.fails(
        &["apply", "-f", "-"],
        Some(&frozen.replace("{k: v}", "{k: w}")),
    );
    assert!(
        err.contains("field is immutable when `immutable` is set"),
        "{err}"
    );
}

#[test]
fn k3s_services_get_a_cluster_ip_that_sticks() {
    let lab = Lab::start();
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: vault, namespace: default}\nspec:\n  selector: {app: vault}\n  ports: [{name: http, port: 8200}]\n";
    lab.ok(&["apply", "-f", "-"], Some(svc));
    let s = lab.json(&["get", "svc", "vault"]);
    let ip = s["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.43.") && ip != "10.43.0.1", "{ip}");
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 8200);
    lab.ok(
        &["apply", "-f", "-"],
        Some(&svc.replace("8200}]", "8200}, {name: cluster, port: 8201}]")),
    );
    assert_eq!(
        lab.json(&["get", "svc", "vault"])["spec"]["clusterIP"],
        ip.as_str()
    );
    let err = lab.fails(
        &[
            "patch",
            "svc",
            "vault",
            "--type=merge",
            "-p",
            r#"{"spec":{"clusterIP":"10.43.9.9"}}"#,
        ],
        None,
    );
    assert!(err.contains("may not change once set"), "{err}");
}

#[test]
fn k3s_label_and_field_selectors() {
    let lab = Lab::start();
    for (name, labels) in [
        ("a", "{app: web, tier: front}"),
        ("b", "{app: db}"),
        ("c", "{app: cache, tier: back}"),
    ] {
        let cm = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default, labels: {labels}}}\n");
        lab.ok(&["apply", "-f", "-"], Some(&cm));
    }
    let names = |args: &[&str]| {
        let mut a = vec!["get", "cm", "-o", "name"];
        a.extend_from_slice(args);
        let out = lab.ok(&a, None);
        let mut v: Vec<String> = out
            .lines()
            .filter(|l| !l.contains("kube-root-ca"))
            .map(|l| l.trim_start_matches("configmap/").to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&["-l", "app=web"]), ["a"]);
    assert_eq!(names(&["-l", "app!=web"]), ["b", "c"]);
    assert_eq!(names(&["-l", "app in (db,cache)"]), ["b", "c"]);
    assert_eq!(names(&["-l", "app notin (db,cache)"]), ["a"]);
    assert_eq!(names(&["-l", "tier"]), ["a", "c"]);
    assert_eq!(names(&["-l", "!tier"]), ["b"]);
    assert_eq!(names(&["-l", "tier,app=cache"]), ["c"]);
    assert_eq!(names(&["--field-selector", "metadata.name=b"]), ["b"]);
    assert_eq!(
        names(&[
            "--field-selector",
            "metadata.name!=b,metadata.namespace=default"
        ]),
        ["a", "c"]
    );
    let err = lab.fails(&["get", "cm", "--field-selector", "data.k=v"], None);
    assert!(err.contains("field label not supported: data.k"), "{err}");
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec:\n  containers: [{name: c, image: busybox}]\n";
    lab.ok(&["apply", "-f", "-"], Some(pod));
    assert!(lab
        .ok(
            &[
                "get",
                "pods",
                "--field-selector",
                "status.phase=Pending",
                "-o",
                "name"
            ],
            None
        )
        .contains("pod/p"));
    assert!(lab
        .ok(
            &[
                "get",
                "pods",
                "--field-selector",
                "status.phase=Running",
                "-o",
                "name"
            ],
            None
        )
        .trim()
        .is_empty());
    // No controller runs the pod yet: its log is refused as the API server does for a waiting container.
    let err = lab.fails(&["logs", "p"], None);
    assert!(
        err.contains(r#"container "c" in pod "p" is waiting to start"#),
        "{err}"
    );
}

#[test]
fn k3s_warn_validation_dry_run_and_generate_name() {
    let lab = Lab::start();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: w, namespace: default}\ndata: {k: v}\nextra: 1\n";
    let o = lab.kubectl_with(
        &lab.kubeconfig,
        &["apply", "--validate=warn", "-f", "-"],
        Some(cm),
    );
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(r#"Warning: unknown field "extra""#), "{err}");
    assert!(
        lab.json(&["get", "cm", "w"]).get("extra").is_none(),
        "unknown fields are dropped"
    );
    let out = lab.ok(&["apply", "--dry-run=server", "-f", "-"], Some(DEPLOY));
    assert!(out.contains("(server dry run)"), "{out}");
    assert!(
        lab.fails(&["get", "deploy", "api"], None)
            .contains("not found"),
        "dry run stores nothing"
    );
    let gen =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: job-, namespace: default}\n";
    let out = lab.ok(&["create", "-f", "-"], Some(gen));
    let name = out
        .trim()
        .trim_start_matches("configmap/")
        .trim_end_matches(" created");
    assert!(name.starts_with("job-") && name.len() == 9, "{out}");
}
