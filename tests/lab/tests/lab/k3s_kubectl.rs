//! lab-k3s fidelity with real kubectl: kubeconfig and auth, apply with default validation,
//! server-side apply and conflicts, patch, stale replace, delete, watch, create job
//! --from=cronjob, missing namespaces, and a restart on the same data dir.

use crate::k3s_support;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use k3s_support::Lab;

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
        env:
        - {name: MODE, value: "prod"}
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: demo
stringData:
  password: hunter2
"#;

#[test]
fn k3s_get_ns_with_the_written_kubeconfig_and_files_where_k3s_writes_them() {
    let lab = Lab::start();
    let out = lab.ok(&["get", "ns"], None);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(out.contains(ns), "{out}");
    }
    let nodes = lab.json(&["get", "nodes"]);
    let ready = &nodes["items"][0]["status"]["conditions"][0];
    assert_eq!(
        (ready["type"].as_str(), ready["status"].as_str()),
        (Some("Ready"), Some("True"))
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&lab.kubeconfig)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode, 0o600,
        "k3s writes its kubeconfig 0600 unless write-kubeconfig-mode says otherwise"
    );
    let kc = std::fs::read_to_string(&lab.kubeconfig).unwrap();
    assert!(
        kc.contains(&format!("server: https://{}", lab.addr))
            && kc.contains("client-certificate-data"),
        "{kc}"
    );
    let token = std::fs::read_to_string(lab.dir.join("data/server/token")).unwrap();
    assert!(
        token.starts_with("K10") && token.contains("::server:"),
        "{token}"
    );
    assert_eq!(
        std::fs::read_to_string(lab.dir.join("data/server/node-token")).unwrap(),
        token
    );
}

#[test]
fn k3s_wrong_token_or_no_credential_gets_401() {
    let lab = Lab::start();
    let kc = std::fs::read_to_string(&lab.kubeconfig).unwrap();
    let user_start = kc.find("    client-certificate-data").unwrap();
    let bad = format!("{}    token: not-the-right-token\n", &kc[..user_start]);
    let bad_path = lab.dir.join("bad.yaml");
    std::fs::write(&bad_path, bad).unwrap();
    let o = lab.kubectl_with(&bad_path, &["get", "ns"], None);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Unauthorized") || err.contains("You must be logged in to the server"),
        "{err}"
    );
    let raw = lab.kubectl_with(&bad_path, &["get", "--raw", "/api/v1/namespaces"], None);
    assert!(
        String::from_utf8_lossy(&raw.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
}

#[test]
fn k3s_apply_with_default_validation_creates_and_is_idempotent() {
    let lab = Lab::start();
    let out = lab.ok(&["apply", "-f", "-"], Some(APP));
    assert!(
        out.contains("namespace/demo created")
            && out.contains("deployment.apps/web created")
            && out.contains("secret/creds created"),
        "{out}"
    );
    let d = lab.json(&["get", "deploy", "web", "-n", "demo"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["metadata"]["generation"], 1);
    assert!(d["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    let s = lab.json(&["get", "secret", "creds", "-n", "demo"]);
    assert_eq!(
        s["data"]["password"], "aHVudGVyMg==",
        "stringData is folded into data"
    );
    assert!(s.get("stringData").is_none());
    let again = lab.ok(&["apply", "-f", "-"], Some(APP));
    assert!(again.contains("deployment.apps/web unchanged"), "{again}");
    // kubectl sends fieldValidation=Strict: a misspelled field is refused by the server.
    let typo = APP.replace("replicas: 2", "replicaz: 2");
    let err = lab.fails(&["apply", "-f", "-"], Some(&typo));
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.replicaz""#),
        "{err}"
    );
    // A wrongly typed field cannot be decoded into the Deployment type.
    let wrong = APP.replace("replicas: 2", "replicas: two");
    let err = lab.fails(&["apply", "-f", "-"], Some(&wrong));
    assert!(err.contains("cannot be handled as a Deployment"), "{err}");
    // And semantic validation: selector must match the template labels.
    let mismatch = APP.replace(
        "labels: {app: web}\n    spec:",
        "labels: {app: other}\n    spec:",
    );
    let err = lab.fails(&["apply", "-f", "-"], Some(&mismatch));
    assert!(
        err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: default\ndata:\n  a: \"1\"\n  b: \"2\"\n";

#[test]
fn k3s_server_side_apply_records_managers_and_reports_conflicts() {
    let lab = Lab::start();
    let out = lab.ok(
        &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
        Some(CM),
    );
    assert!(out.contains("serverside-applied"), "{out}");
    let other = CM.replace("a: \"1\"", "a: \"9\"");
    let err = lab.fails(
        &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
        Some(&other),
    );
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "alice""#)
            && err.contains(".data.a"),
        "{err}"
    );
    assert_eq!(
        lab.json(&["get", "cm", "cfg"])["data"]["a"],
        "1",
        "a refused apply changes nothing"
    );
    // An undeclared field in an apply body: kube-apiserver's typed conversion fails (500).
    let err = lab.fails(
        &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
        Some(&CM.replace("\ndata:", "\ndataa:")),
    );
    assert!(
        err.contains("failed to create typed patch object (default/cfg; /v1, Kind=ConfigMap): .dataa: field not declared in schema"),
        "{err}"
    );
    // Same value: co-owned, no conflict.
    lab.ok(
        &["apply", "--server-side", "--field-manager=carol", "-f", "-"],
        Some(CM),
    );
    lab.ok(
        &[
            "apply",
            "--server-side",
            "--field-manager=bob",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(&other),
    );
    let cm = lab.json(&["get", "cm", "cfg", "--show-managed-fields"]);
    assert_eq!(cm["data"]["a"], "9");
    let mf = cm["metadata"]["managedFields"].as_array().unwrap();
    let owns = |m: &str, f: &str| {
        mf.iter().any(|e| {
            e["manager"] == m
                && e["operation"] == "Apply"
                && e["fieldsV1"]["f:data"].get(f).is_some()
        })
    };
    assert!(
        owns("bob", "f:a") && !owns("alice", "f:a") && owns("alice", "f:b") && owns("carol", "f:b"),
        "{mf:?}"
    );
    // A manager that stops applying a field it alone owns removes it.
    let only_a = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: solo\n  namespace: default\ndata:\n  x: \"1\"\n  y: \"2\"\n";
    lab.ok(
        &["apply", "--server-side", "--field-manager=dave", "-f", "-"],
        Some(only_a),
    );
    lab.ok(
        &["apply", "--server-side", "--field-manager=dave", "-f", "-"],
        Some(&only_a.replace("  y: \"2\"\n", "")),
    );
    let solo = lab.json(&["get", "cm", "solo"]);
    assert!(
        solo["data"].get("y").is_none() && solo["data"]["x"] == "1",
        "{solo}"
    );
}

#[test]
fn k3s_patch_merge_and_strategic() {
    let lab = Lab::start();
    lab.ok(&["apply", "-f", "-"], Some(APP));
    lab.ok(
        &[
            "patch",
            "deploy",
            "web",
            "-n",
            "demo",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"tier":"front"}}}"#,
        ],
        None,
    );
    // Strategic merge: containers merge by name, the existing one stays.
    lab.ok(
        &[
            "patch",
            "deploy",
            "web",
            "-n",
            "demo",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox"}]}}}}"#,
        ],
        None,
    );
    let d = lab.json(&["get", "deploy", "web", "-n", "demo"]);
    let names: Vec<&str> = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "side"]);
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(
        d["metadata"]["generation"], 2,
        "a spec change bumps generation, a label change does not"
    );
    // Strategic delete directive, then a merge patch that replaces the whole list.
    lab.ok(
        &[
            "patch",
            "deploy",
            "web",
            "-n",
            "demo",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","$patch":"delete"}]}}}}"#,
        ],
        None,
    );
    let d = lab.json(&["get", "deploy", "web", "-n", "demo"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    lab.ok(
        &[
            "patch",
            "deploy",
            "web",
            "-n",
            "demo",
            "--type=merge",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"only","image":"alpine"}]}}}}"#,
        ],
        None,
    );
    let d = lab.json(&["get", "deploy", "web", "-n", "demo"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["name"],
        "only"
    );
    assert!(
        d["spec"]["template"]["spec"]["containers"][0]
            .get("ports")
            .is_none(),
        "merge patch replaces lists"
    );
    // JSON patch too.
    lab.ok(
        &[
            "patch",
            "deploy",
            "web",
            "-n",
            "demo",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":5}]"#,
        ],
        None,
    );
    assert_eq!(
        lab.json(&["get", "deploy", "web", "-n", "demo"])["spec"]["replicas"],
        5
    );
    // Status sent to the main resource is ignored (status subresource).
    lab.ok(
        &[
            "patch",
            "deploy",
            "web",
            "-n",
            "demo",
            "--type=merge",
            "-p",
            r#"{"status":{"collisionCount":7}}"#,
        ],
        None,
    );
    // (collisionCount: a status field the lab's Deployment controller leaves alone.)
    assert!(
        lab.json(&["get", "deploy", "web", "-n", "demo"])["status"]["collisionCount"].is_null()
    );
    lab.ok(
        &[
            "patch",
            "deploy",
            "web",
            "-n",
            "demo",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"collisionCount":7}}"#,
        ],
        None,
    );
    assert_eq!(
        lab.json(&["get", "deploy", "web", "-n", "demo"])["status"]["collisionCount"],
        7
    );
}

#[test]
fn k3s_replace_with_a_stale_resource_version_is_refused() {
    let lab = Lab::start();
    lab.ok(&["apply", "-f", "-"], Some(APP));
    let stale = lab.ok(&["get", "deploy", "web", "-n", "demo", "-o", "json"], None);
    lab.ok(
        &[
            "patch",
            "deploy",
            "web",
            "-n",
            "demo",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":3}}"#,
        ],
        None,
    );
    let err = lab.fails(&["replace", "-f", "-"], Some(&stale));
    assert!(
        err.contains("Conflict") && err.contains("the object has been modified"),
        "{err}"
    );
    assert_eq!(
        lab.json(&["get", "deploy", "web", "-n", "demo"])["spec"]["replicas"],
        3
    );
    let fresh = lab
        .ok(&["get", "deploy", "web", "-n", "demo", "-o", "json"], None)
        .replace("\"replicas\": 3", "\"replicas\": 4");
    lab.ok(&["replace", "-f", "-"], Some(&fresh));
    assert_eq!(
        lab.json(&["get", "deploy", "web", "-n", "demo"])["spec"]["replicas"],
        4
    );
}

#[test]
fn k3s_delete_and_namespace_deletion_takes_its_objects() {
    let lab = Lab::start();
    lab.ok(&["apply", "-f", "-"], Some(APP));
    let out = lab.ok(&["delete", "deploy", "web", "-n", "demo"], None);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    let err = lab.fails(&["get", "deploy", "web", "-n", "demo"], None);
    assert!(err.contains(r#"deployments.apps "web" not found"#), "{err}");
    lab.ok(&["delete", "ns", "demo"], None);
    let err = lab.fails(&["get", "secret", "creds", "-n", "demo"], None);
    assert!(err.contains("not found"), "{err}");
    lab.ok(&["create", "ns", "demo"], None);
    assert!(
        lab.ok(&["get", "secrets", "-n", "demo", "-o", "name"], None)
            .trim()
            .is_empty(),
        "the namespace's objects went with it"
    );
}

#[test]
fn k3s_watch_sees_an_update_made_by_another_client() {
    let lab = Lab::start();
    lab.ok(&["apply", "-f", "-"], Some(CM));
    let mut w = lab.spawn(&[
        "get",
        "configmap",
        "cfg",
        "-w",
        "-o",
        "jsonpath={.data.a}{\"\\n\"}",
    ]);
    let (tx, rx) = mpsc::channel();
    let stdout = w.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("watch printed the current object");
    assert_eq!(first.trim(), "1");
    lab.ok(
        &[
            "patch",
            "cm",
            "cfg",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"2"}}"#,
        ],
        None,
    );
    let next = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("watch saw the update");
    assert_eq!(next.trim(), "2");
    let _ = w.kill();
    let _ = w.wait();
}

#[test]
fn k3s_create_job_from_cronjob_as_kubectl_builds_it() {
    let lab = Lab::start();
    let cj = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: vault-auto-unseal, namespace: default}
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    metadata:
      labels: {app: unseal}
    spec:
      backoffLimit: 2
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: unseal
            image: alpine:3.20
            command: ["/bin/sh", "-c", "echo unseal"]
"#;
    lab.ok(&["apply", "-f", "-"], Some(cj));
    let out = lab.ok(
        &[
            "create",
            "job",
            "manual-1",
            "--from=cronjob/vault-auto-unseal",
        ],
        None,
    );
    assert!(out.contains("job.batch/manual-1 created"), "{out}");
    let job = lab.json(&["get", "job", "manual-1"]);
    let cj = lab.json(&["get", "cronjob", "vault-auto-unseal"]);
    let owner = &job["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "CronJob");
    assert_eq!(owner["uid"], cj["metadata"]["uid"]);
    assert_eq!(
        job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(job["metadata"]["labels"]["app"], "unseal");
    assert_eq!(job["spec"]["backoffLimit"], 2);
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"][2],
        "echo unseal"
    );
    let uid = job["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["job-name"],
        "manual-1"
    );
}

#[test]
fn k3s_object_in_a_missing_namespace_is_refused() {
    let lab = Lab::start();
    let err = lab.fails(
        &["apply", "-f", "-"],
        Some(&CM.replace("namespace: default", "namespace: nope")),
    );
    assert!(err.contains(r#"namespaces "nope" not found"#), "{err}");
    let err = lab.fails(&["create", "configmap", "x", "-n", "nope"], None);
    assert!(err.contains(r#"namespaces "nope" not found"#), "{err}");
    let err = lab.fails(
        &["apply", "--server-side", "-f", "-"],
        Some(&CM.replace("namespace: default", "namespace: nope")),
    );
    assert!(err.contains(r#"namespaces "nope" not found"#), "{err}");
}

#[test]
fn k3s_restart_on_the_same_data_dir_keeps_objects_and_ends_old_watch_history() {
    let mut lab = Lab::start();
    lab.ok(&["apply", "-f", "-"], Some(APP));
    let before = lab.json(&["get", "deploy", "web", "-n", "demo"]);
    let ca_before = std::fs::read(lab.dir.join("data/server/tls/server-ca.crt")).unwrap();
    lab.kill();
    let lab2 = Lab::start_in(&lab.dir.clone());
    let after = lab2.json(&["get", "deploy", "web", "-n", "demo"]);
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    assert_eq!(
        std::fs::read(lab2.dir.join("data/server/tls/server-ca.crt")).unwrap(),
        ca_before,
        "the CA survives"
    );
    lab2.ok(
        &[
            "patch",
            "deploy",
            "web",
            "-n",
            "demo",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":1}}"#,
        ],
        None,
    );
    let rv_after: u64 = lab2.json(&["get", "deploy", "web", "-n", "demo"])["metadata"]
        ["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let rv_before: u64 = before["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        rv_after > rv_before,
        "resourceVersion keeps counting up across restarts"
    );
    // Resuming a watch from before the restart: 410 Expired, delivered as an ERROR event.
    let out = lab2.ok(
        &[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/demo/deployments?watch=1&resourceVersion=1&timeoutSeconds=2",
        ],
        None,
    );
    assert!(
        out.contains(r#""type":"ERROR""#)
            && out.contains(r#""code":410"#)
            && out.contains("too old resource version"),
        "{out}"
    );
}

#[test]
fn k3s_config_yaml_sets_kubeconfig_mode_tls_sans_and_node_name() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.yaml");
    std::fs::write(
        &config,
        "write-kubeconfig-mode: \"0644\"\ntls-san:\n  - homelab.example\n  - 192.0.2.10\nnode-name: homelab\ndisable: [traefik, servicelb]\nflannel-backend: none\n",
    )
    .unwrap();
    let lab = Lab::start_with_config(tmp.path(), &config);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&lab.kubeconfig)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
    assert!(lab
        .ok(&["get", "nodes", "-o", "name"], None)
        .contains("node/homelab"));
    // The serving certificate carries the tls-san names: TLS verifies against them.
    lab.ok(
        &["--tls-server-name=homelab.example", "get", "ns", "default"],
        None,
    );
    let err = lab.fails(
        &[
            "--tls-server-name=elsewhere.example",
            "get",
            "ns",
            "default",
        ],
        None,
    );
    assert!(err.contains("x509") || err.contains("certificate"), "{err}");
}

#[test]
fn k3s_watch_with_a_label_selector_reports_objects_entering_and_leaving_it() {
    let lab = Lab::start();
    lab.ok(&["create", "configmap", "w"], None);
    let mut w = lab.spawn(&[
        "get",
        "cm",
        "-l",
        "sel=yes",
        "-w",
        "--output-watch-events",
        "-o",
        "jsonpath={.type} {.object.metadata.name}{\"\\n\"}",
    ]);
    let (tx, rx) = mpsc::channel();
    let stdout = w.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Whether the label lands before or after the watch starts, it is reported as ADDED
    // (initial list or event); the second change is only ever seen as an event.
    lab.ok(&["label", "cm", "w", "sel=yes"], None);
    let added = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("ADDED when the object starts matching");
    assert_eq!(added.trim(), "ADDED w");
    lab.ok(&["label", "cm", "w", "sel=no", "--overwrite"], None);
    let deleted = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("DELETED when it stops matching");
    assert_eq!(deleted.trim(), "DELETED w");
    let _ = w.kill();
    let _ = w.wait();
}

/// kube-controller-manager gives every namespace a ServiceAccount `default`, however the
/// namespace was made; the ServiceAccount admission plugin refuses a pod whose account is
/// missing. A namespace made by server-side apply once had none (issue 25, defect 1), so no
/// pod could be created in it.
#[test]
fn k3s_every_namespace_gets_a_default_service_account_and_pods_need_theirs() {
    let lab = Lab::start();
    lab.ok(&["create", "namespace", "made-by-create"], None);
    lab.ok(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: made-by-apply\n"),
    );
    lab.ok(
        &["apply", "--server-side", "--field-manager=rebox", "-f", "-"],
        Some("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: made-by-ssa\n"),
    );
    for ns in ["made-by-create", "made-by-apply", "made-by-ssa"] {
        let sa = lab.json(&["get", "serviceaccount", "default", "-n", ns]);
        assert_eq!(sa["metadata"]["name"], "default", "{ns}: {sa}");
    }
    let pod = |sa: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p-{sa}\n  namespace: made-by-ssa\nspec:\n  serviceAccountName: {sa}\n  containers:\n  - name: c\n    image: busybox\n"
        )
    };
    let err = lab.fails(&["create", "-f", "-"], Some(&pod("nobody")));
    assert!(
        err.contains("error looking up service account made-by-ssa/nobody: serviceaccount \"nobody\" not found"),
        "{err}"
    );
    lab.ok(&["create", "-f", "-"], Some(&pod("default")));
}

/// k3s's aggregated metrics API: `/apis` lists `metrics.k8s.io` whether metrics-server runs or
/// not, its version answers 503 until Deployment kube-system/metrics-server is Available, and
/// kubectl keeps working meanwhile (it warns, as against a real k3s on its first minute).
#[test]
fn k3s_aggregated_metrics_api_is_listed_and_unavailable_until_metrics_server_runs() {
    let lab = Lab::start();
    let raw = |path: &str| -> serde_json::Value {
        serde_json::from_str(&lab.ok(&["get", "--raw", path], None)).unwrap()
    };
    let groups = raw("/apis");
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "metrics.k8s.io"),
        "{groups}"
    );
    let err = lab.fails(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1"], None);
    assert!(
        err.contains("the server is currently unable to handle the request")
            || err.contains("service unavailable"),
        "{err}"
    );
    // Discovery errors on one group do not stop kubectl.
    lab.ok(&["get", "pods", "-A"], None);
    lab.ok(
        &[
            "create",
            "deployment",
            "metrics-server",
            "-n",
            "kube-system",
            "--image=rancher/mirrored-metrics-server:v0.8.0",
        ],
        None,
    );
    lab.ok(
        &[
            "wait",
            "-n",
            "kube-system",
            "--for=condition=Available",
            "deployment/metrics-server",
            "--timeout=60s",
        ],
        None,
    );
    let served = raw("/apis/metrics.k8s.io/v1beta1");
    assert_eq!(served["groupVersion"], "metrics.k8s.io/v1beta1", "{served}");
}
