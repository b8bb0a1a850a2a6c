//! Shared by the `longhorn_*`, `nas_*`, `eso_*`, `argocd_*` and `faults_*` tests: lab-k3s in
//! this process on 127.0.0.1:0 with a temp data dir, driven by the real `kubectl` through the
//! kubeconfig it writes; waits poll observable state with a deadline.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rebox_lab::k3s::{Options, Running};
use serde_json::Value;

pub struct Lab {
    pub k3s: Running,
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

pub fn kubectl_bin() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

impl Lab {
    pub async fn start() -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let data_dir = dir.join("data");
        let k3s = Running::start(Options {
            data_dir: data_dir.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            kubeconfig: dir.join("k3s.yaml"),
            kubeconfig_mode: 0o600,
            tls_san: vec![],
            node_name: "lab".into(),
        })
        .await
        .expect("starting lab-k3s");
        Lab {
            k3s,
            dir,
            data_dir,
            _tmp: tmp,
        }
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new(kubectl_bin())
            .args(args)
            .env("KUBECONFIG", &self.k3s.kubeconfig)
            .env("HOME", self.dir.join("home"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl (install it, or set KUBECTL)");
        let mut input = c.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        c.wait_with_output().unwrap()
    }

    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.kubectl(args, stdin);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn apply(&self, v: &Value) {
        self.ok(&["apply", "-f", "-"], Some(&v.to_string()));
    }

    /// `kubectl get <args> -o json`, or None when it fails (not found yet).
    pub fn get(&self, args: &[&str]) -> Option<Value> {
        let mut a: Vec<&str> = vec!["get"];
        a.extend(args);
        a.extend(["-o", "json"]);
        let o = self.kubectl(&a, None);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).expect("kubectl -o json"))
    }

    /// Polls `f` until it returns Some, failing after `secs` with `what` and the last value.
    pub async fn wait<T>(
        &self,
        what: &str,
        secs: u64,
        mut f: impl FnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            match f() {
                Ok(v) => return v,
                Err(last) if Instant::now() >= deadline => {
                    panic!("timed out after {secs}s waiting for {what}; last seen: {last}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Registers the CRDs (as a chart's crds/ directory would) through kubectl.
    pub fn install_crds(&self, crds: &[Value]) {
        for c in crds {
            self.apply(c);
        }
        for c in crds {
            let name = c["metadata"]["name"].as_str().unwrap();
            self.ok(
                &[
                    "wait",
                    "--for=condition=Established",
                    &format!("crd/{name}"),
                    "--timeout=30s",
                ],
                None,
            );
        }
    }

    /// Longhorn as its chart installs it, with the chart's `values`: the CRDs, the namespace,
    /// then the chart's objects (the `longhorn-default-resource` ConfigMap from
    /// `defaultBackupStore`, the longhorn-manager DaemonSet, …). Returns at once, as
    /// `helm install` does: BackupTarget `default` comes once the manager's pod is Ready.
    pub fn install_longhorn_chart(&self, values: &Value) {
        use rebox_lab::k3s::controllers::{helm, longhorn};
        self.install_crds(&longhorn::longhorn_crds());
        self.namespace("longhorn-system");
        let (_, objects) = helm::chart_objects("longhorn", "longhorn", "longhorn-system", values);
        for o in objects {
            self.apply(&o);
        }
    }

    pub fn namespace(&self, ns: &str) {
        if self.get(&["namespace", ns]).is_none() {
            self.ok(&["create", "namespace", ns], None);
        }
    }
}

/// The condition `ty` of an object.
pub fn cond<'a>(o: &'a Value, ty: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}
