//! Controllers (issue 5): Jobs run their command for real on the node (here: the host, as
//! root, in a private mount namespace), with env, mounted Secrets and a service-account token
//! that authenticates; output is the pod log; CronJobs fire on the lab clock.

use crate::k3s_support;

use k3s_support::Lab;

const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: unseal\n  namespace: jobs\ntype: Opaque\nstringData:\n  key: |\n    share-one\n    share-two\n";

/// A CronJob in the shape rebox renders (runAsUser 65534, fsGroup, Secret mounted 0440 with
/// items), whose script uses curl (against the API, with the pod's token and CA) and kubectl.
fn cronjob(schedule: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: probe
  namespace: jobs
spec:
  schedule: "{schedule}"
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: 100
  successfulJobsHistoryLimit: 2
  failedJobsHistoryLimit: 1
  jobTemplate:
    metadata:
      labels:
        app.kubernetes.io/name: probe
    spec:
      backoffLimit: 0
      activeDeadlineSeconds: 60
      template:
        spec:
          serviceAccountName: probe
          restartPolicy: Never
          securityContext:
            runAsNonRoot: true
            runAsUser: 65534
            runAsGroup: 65534
            fsGroup: 65534
          containers:
            - name: probe
              image: alpine/k8s:1.35.0
              command:
                - /bin/sh
                - -c
                - |
                  set -eu
                  echo "user $(id -u)"
                  echo "lines $(grep -c . "$KEY_FILE")"
                  echo "first $(head -n 1 "$KEY_FILE")"
                  echo "from-secret $FROM_SECRET"
                  echo "pod $POD_NAME"
                  T=/var/run/secrets/kubernetes.io/serviceaccount
                  code=$(curl -sS -o /dev/null -w '%{{http_code}}' --cacert $T/ca.crt -H "Authorization: Bearer $(cat $T/token)" "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/$(cat $T/namespace)/secrets")
                  echo "curl $code"
                  echo "kubectl $(kubectl get secret unseal -o jsonpath='{{.metadata.name}}')"
                  echo "dns $(getent hosts kubernetes.default.svc | cut -d' ' -f1) $(getent hosts probe-svc | cut -d' ' -f1)"
                  echo "nobody writes: $(touch /etc/vault-unseal/x 2>/dev/null && echo yes || echo no)"
              env:
                - name: KEY_FILE
                  value: /etc/vault-unseal/key
                - name: HOME
                  value: /tmp
                - name: FROM_SECRET
                  valueFrom:
                    secretKeyRef:
                      name: unseal
                      key: key
                - name: POD_NAME
                  valueFrom:
                    fieldRef:
                      fieldPath: metadata.name
              volumeMounts:
                - name: unseal-key
                  mountPath: /etc/vault-unseal
                  readOnly: true
                - name: tmp
                  mountPath: /tmp
          volumes:
            - name: tmp
              emptyDir: {{}}
            - name: unseal-key
              secret:
                secretName: unseal
                defaultMode: 288
                items:
                  - key: key
                    path: key
"#
    )
}

fn setup(lab: &Lab, schedule: &str) {
    lab.ok(&["create", "namespace", "jobs"], None);
    lab.ok(&["-n", "jobs", "create", "serviceaccount", "probe"], None);
    lab.ok(&["apply", "-f", "-"], Some(SECRET));
    lab.ok(
        &[
            "-n",
            "jobs",
            "create",
            "service",
            "clusterip",
            "probe-svc",
            "--tcp=80:80",
        ],
        None,
    );
    lab.ok(&["apply", "-f", "-"], Some(&cronjob(schedule)));
}

#[test]
fn controllers_job_from_cronjob_runs_with_secret_token_and_logs() {
    let lab = Lab::start();
    // A schedule that never fires during the test: only the manual Job runs.
    setup(&lab, "0 0 1 1 *");
    lab.ok(
        &[
            "-n",
            "jobs",
            "create",
            "job",
            "manual",
            "--from=cronjob/probe",
        ],
        None,
    );
    lab.ok(
        &[
            "-n",
            "jobs",
            "wait",
            "--for=condition=Complete",
            "job/manual",
            "--timeout=60s",
        ],
        None,
    );
    let log = lab.ok(&["-n", "jobs", "logs", "job/manual"], None);
    assert!(log.contains("user 65534"), "{log}");
    assert!(log.contains("lines 2"), "{log}");
    assert!(log.contains("first share-one"), "{log}");
    assert!(log.contains("from-secret share-one"), "{log}");
    assert!(log.contains("pod manual-"), "{log}");
    assert!(
        log.contains("curl 200"),
        "the pod's token authenticates: {log}"
    );
    assert!(
        log.contains("kubectl unseal"),
        "in-cluster kubectl works: {log}"
    );
    assert!(log.contains("nobody writes: no"), "{log}");
    // Cluster DNS stand-in: Service names resolve to their ClusterIPs inside the pod only.
    let svc_ip = lab.json(&["-n", "jobs", "get", "service", "probe-svc"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(log.contains(&format!("dns 10.43.0.1 {svc_ip}")), "{log}");
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    assert!(
        !hosts.contains("probe-svc"),
        "the node's /etc/hosts is untouched"
    );
    let pods = lab.json(&["-n", "jobs", "get", "pods", "-l", "job-name=manual"]);
    assert_eq!(pods["items"][0]["status"]["phase"], "Succeeded", "{pods}");
    // The mount never touched the host.
    assert!(!std::path::Path::new("/etc/vault-unseal").exists());

    // A failing command: backoffLimit 0 → Failed.
    let failing = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: boom\n  namespace: jobs\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: boom\n          image: busybox\n          command: [/bin/sh, -c, 'echo going down; exit 3']\n";
    lab.ok(&["apply", "-f", "-"], Some(failing));
    lab.ok(
        &[
            "-n",
            "jobs",
            "wait",
            "--for=condition=Failed",
            "job/boom",
            "--timeout=60s",
        ],
        None,
    );
    let job = lab.json(&["-n", "jobs", "get", "job", "boom"]);
    assert_eq!(job["status"]["failed"], 1);
    assert!(lab
        .ok(&["-n", "jobs", "logs", "job/boom"], None)
        .contains("going down"));
}

#[test]
fn controllers_cronjob_fires_on_the_lab_clock() {
    // LAB_CLOCK_SPEED is read by the lab-k3s child, given to it alone (the other tests of
    // this binary start labs concurrently).
    let lab = Lab::start_with_env(&[("LAB_CLOCK_SPEED", "60")]);
    setup(&lab, "* * * * *");
    // Every lab minute = one wall second: Jobs appear and complete; history is pruned to 2.
    lab.ok(
        &[
            "-n",
            "jobs",
            "wait",
            "--for=jsonpath={.status.lastSuccessfulTime}",
            "cronjob/probe",
            "--timeout=60s",
        ],
        None,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = std::collections::HashSet::new();
    loop {
        let jobs = lab.json(&[
            "-n",
            "jobs",
            "get",
            "jobs",
            "-l",
            "app.kubernetes.io/name=probe",
        ]);
        let cj = lab.json(&["-n", "jobs", "get", "cronjob", "probe"]);
        let names: Vec<String> = jobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        let complete = jobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["status"]["succeeded"] == 1)
            .count();
        seen.extend(names.iter().cloned());
        // Pruned to successfulJobsHistoryLimit after at least four runs.
        if seen.len() >= 4
            && complete == 2
            && names.len() <= 3
            && cj["status"]["lastScheduleTime"].is_string()
        {
            let owners: Vec<_> = jobs["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["metadata"]["ownerReferences"][0]["name"].clone())
                .collect();
            assert!(owners.iter().all(|o| o == "probe"), "{owners:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "CronJob history never settled: {names:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
