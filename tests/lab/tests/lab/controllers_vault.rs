//! Controllers (issue 5, 13): the vault chart's pod `vault-0` is the real OpenBao server
//! (`bao`) whose raft data lives in the Longhorn volume bound to PVC `vault-data-lh`; Ready
//! only when unsealed; when its process dies the kubelet starts it again (restartCount 1),
//! sealed, data kept; after a lab-k3s restart (power loss) it is sealed and not ready. On the
//! host the Service is reached at the 127.0.0.1 address lab-k3s records in the Service (no
//! host network change).

use crate::k3s_support;

use std::process::Command;
use std::time::{Duration, Instant};

use k3s_support::Lab;
use serde_json::Value;

const CHART: &str = r#"apiVersion: helm.cattle.io/v1
kind: HelmChart
metadata:
  name: vault
  namespace: kube-system
spec:
  chart: vault
  repo: https://helm.releases.hashicorp.com
  version: 0.31.0
  targetNamespace: security
  createNamespace: false
  failurePolicy: abort
  timeout: 600s
  valuesContent: |-
    server:
      standalone:
        enabled: true
      ha:
        enabled: false
      dataStorage:
        enabled: false
      volumes:
        - name: vault-data
          persistentVolumeClaim:
            claimName: vault-data-lh
      volumeMounts:
        - name: vault-data
          mountPath: /vault/data
      service:
        port: 8200
"#;

const STORAGE: &str = r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: vault-data-lh
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: longhorn
  csi: {driver: driver.longhorn.io, volumeHandle: vault-data-lh, fsType: ext4}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: vault-data-lh
  namespace: security
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: longhorn
  volumeName: vault-data-lh
  resources: {requests: {storage: 1Gi}}
"#;

fn vault_addr(lab: &Lab) -> String {
    let svc = lab.json(&["-n", "security", "get", "service", "vault"]);
    let a = svc["metadata"]["annotations"]["lab.rebox.dev/node-address"].as_str();
    format!(
        "http://{}",
        a.unwrap_or_else(|| panic!("no node address on the vault Service: {svc}"))
    )
}

fn curl(args: &[&str]) -> Option<Value> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Polls seal-status until Vault answers (deadline 30 s).
fn seal_status(addr: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = curl(&[&format!("{addr}/v1/sys/seal-status")]) {
            return v;
        }
        assert!(Instant::now() < deadline, "Vault never answered at {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ready(lab: &Lab) -> String {
    let pod = lab.json(&["-n", "security", "get", "pod", "vault-0"]);
    pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| "absent".into())
}

#[test]
fn controllers_vault_0_ready_only_when_unsealed_and_sealed_after_restart() {
    let mut lab = Lab::start();
    lab.ok(&["create", "namespace", "security"], None);
    lab.ok(&["apply", "-f", "-"], Some(CHART));
    lab.ok(
        &[
            "-n",
            "kube-system",
            "wait",
            "--for=condition=Complete",
            "job/helm-install-vault",
            "--timeout=60s",
        ],
        None,
    );
    let svc = lab.json(&["-n", "security", "get", "service", "vault"]);
    assert_eq!(svc["spec"]["ports"][0]["port"], 8200);
    assert_eq!(svc["spec"]["publishNotReadyAddresses"], true);
    let sts = lab.json(&["-n", "security", "get", "statefulset", "vault"]);
    assert_eq!(sts["spec"]["updateStrategy"]["type"], "OnDelete");
    // No claim yet: vault-0 is Pending.
    lab.ok(
        &[
            "-n",
            "security",
            "wait",
            "--for=jsonpath={.status.phase}=Pending",
            "pod/vault-0",
            "--timeout=30s",
        ],
        None,
    );
    let pod = lab.json(&["-n", "security", "get", "pod", "vault-0"]);
    assert!(
        pod["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("persistentvolumeclaim"),
        "{pod}"
    );

    // The claim bound to the Longhorn volume: vault-0 runs, sealed (not initialised) → not Ready.
    lab.ok(&["apply", "-f", "-"], Some(STORAGE));
    lab.ok(
        &[
            "-n",
            "security",
            "wait",
            "--for=jsonpath={.status.phase}=Running",
            "pod/vault-0",
            "--timeout=30s",
        ],
        None,
    );
    let addr = vault_addr(&lab);
    let st = seal_status(&addr);
    assert_eq!(st["initialized"], false, "{st}");
    let init = curl(&[
        "-X",
        "PUT",
        "-d",
        r#"{"secret_shares":1,"secret_threshold":1}"#,
        &format!("{addr}/v1/sys/init"),
    ])
    .expect("init answered");
    let key = init["keys"][0].as_str().expect("a key share").to_string();
    assert_eq!(seal_status(&addr)["sealed"], true);
    assert_eq!(ready(&lab), "False", "a sealed Vault is not Ready");
    // Its raft data lives in the Longhorn volume's directory.
    let volume = lab.dir.join("data/longhorn/volumes/vault-data-lh/data");
    for f in ["vault.db", "raft/raft.db"] {
        assert!(volume.join(f).is_file(), "no {f} in {}", volume.display());
    }

    // Unsealed → Ready.
    let st = curl(&[
        "-X",
        "PUT",
        "-d",
        &format!(r#"{{"key":"{key}"}}"#),
        &format!("{addr}/v1/sys/unseal"),
    ])
    .expect("unseal answered");
    assert_eq!(st["sealed"], false, "{st}");
    lab.ok(
        &[
            "-n",
            "security",
            "wait",
            "--for=condition=Ready",
            "pod/vault-0",
            "--timeout=30s",
        ],
        None,
    );

    // The process dies (a crash, SIGKILL): the kubelet starts it again; Vault is sealed, its
    // data kept, vault-0 Running but not Ready, its container restarted once.
    let pid_file = rebox_lab::k3s::controllers::workloads::vault_run_dir(
        &lab.dir.join("data"),
        "security",
        "vault-0",
    )
    .join("pid");
    let pid = std::fs::read_to_string(&pid_file).expect("the kubelet records the pid");
    let out = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .output()
        .unwrap();
    assert!(out.status.success(), "kill: {out:?}");
    lab.ok(
        &[
            "-n",
            "security",
            "wait",
            "--for=jsonpath={.status.containerStatuses[0].restartCount}=1",
            "pod/vault-0",
            "--timeout=30s",
        ],
        None,
    );
    lab.ok(
        &[
            "-n",
            "security",
            "wait",
            "--for=condition=Ready=false",
            "pod/vault-0",
            "--timeout=30s",
        ],
        None,
    );
    let st = seal_status(&addr);
    assert_eq!(
        (st["initialized"].clone(), st["sealed"].clone()),
        (Value::Bool(true), Value::Bool(true)),
        "{st}"
    );
    assert_ne!(
        std::fs::read_to_string(&pid_file).unwrap(),
        pid,
        "a new process"
    );
    let st = curl(&[
        "-X",
        "PUT",
        "-d",
        &format!(r#"{{"key":"{key}"}}"#),
        &format!("{addr}/v1/sys/unseal"),
    ])
    .expect("unseal answered");
    assert_eq!(st["sealed"], false, "{st}");
    lab.ok(
        &[
            "-n",
            "security",
            "wait",
            "--for=condition=Ready",
            "pod/vault-0",
            "--timeout=30s",
        ],
        None,
    );

    // Power loss: lab-k3s and its processes die; on restart Vault is back, sealed, not Ready.
    let dir = lab.dir.clone();
    lab.kill();
    let lab = Lab::start_in(&dir);
    let st = seal_status(&addr);
    assert_eq!(
        (st["initialized"].clone(), st["sealed"].clone()),
        (Value::Bool(true), Value::Bool(true)),
        "{st}"
    );
    lab.ok(
        &[
            "-n",
            "security",
            "wait",
            "--for=condition=Ready=false",
            "pod/vault-0",
            "--timeout=30s",
        ],
        None,
    );
    assert_eq!(
        lab.json(&["-n", "security", "get", "pod", "vault-0"])["status"]["phase"],
        "Running"
    );
    // Only the original key opens it; then vault-0 is Ready again.
    let st = curl(&[
        "-X",
        "PUT",
        "-d",
        &format!(r#"{{"key":"{key}"}}"#),
        &format!("{addr}/v1/sys/unseal"),
    ])
    .expect("unseal answered");
    assert_eq!(st["sealed"], false, "{st}");
    lab.ok(
        &[
            "-n",
            "security",
            "wait",
            "--for=condition=Ready",
            "pod/vault-0",
            "--timeout=30s",
        ],
        None,
    );
}
