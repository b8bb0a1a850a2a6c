//! Shared by the `k3s_*` fidelity tests: starts the real `lab-k3s` binary on 127.0.0.1:0
//! with a temp data dir and drives it with the real `kubectl` through the kubeconfig the
//! stand-in writes (with its own HOME so kubectl's discovery cache starts empty).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub struct Lab {
    child: Option<Child>,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub addr: String,
    _tmp: Option<tempfile::TempDir>,
}

pub fn kubectl_bin() -> String {
    let p = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let ok = Command::new(&p)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "the k3s fidelity tests need a real kubectl on PATH (or KUBECTL=...); install it (.ci/run does)");
    p
}

impl Lab {
    pub fn start() -> Lab {
        Lab::start_with_env(&[])
    }

    /// Starts lab-k3s in a new directory with `env` set for it alone.
    pub fn start_with_env(env: &[(&str, &str)]) -> Lab {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut lab = Lab::launch(&dir, Path::new("/dev/null"), env);
        lab._tmp = Some(tmp);
        lab
    }

    /// Starts lab-k3s on an existing directory (used to restart on the same data dir).
    pub fn start_in(dir: &Path) -> Lab {
        Lab::start_with_config(dir, Path::new("/dev/null"))
    }

    /// Starts lab-k3s with `--config <config>` (k3s's config.yaml) on `dir`.
    pub fn start_with_config(dir: &Path, config: &Path) -> Lab {
        Lab::launch(dir, config, &[])
    }

    fn launch(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Lab {
        kubectl_bin();
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let kubeconfig = dir.join("k3s.yaml");
        let mut child = Command::new(env!("CARGO_BIN_EXE_lab-k3s"))
            .args(["server", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0", "--write-kubeconfig"])
            .arg(&kubeconfig)
            .arg("--config")
            .arg(config)
            .args([
                "--disable",
                "traefik",
                "--cluster-init",
                "--snapshotter=native",
            ])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning lab-k3s");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("lab-k3s said {line:?}"))
            .to_string();
        Lab {
            child: Some(child),
            dir: dir.to_path_buf(),
            kubeconfig,
            addr,
            _tmp: None,
        }
    }

    /// Kills the process (a power loss) and keeps the data dir.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new(kubectl_bin())
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", self.dir.join("home"))
            .env_remove("KUBECACHEDIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        let mut input = c.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        c.wait_with_output().unwrap()
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&self.kubeconfig, args, None)
    }

    /// Runs kubectl (with `stdin` for `-f -`), asserts success and returns stdout.
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.kubectl_with(&self.kubeconfig, args, stdin);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs kubectl, asserts failure and returns stderr.
    pub fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.kubectl_with(&self.kubeconfig, args, stdin);
        assert!(
            !o.status.success(),
            "kubectl {args:?} should have failed but printed:\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a, None)).expect("kubectl -o json")
    }

    /// A kubectl process left running (for `get -w`), killed on drop.
    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new(kubectl_bin())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.join("home"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `$CARGO_MANIFEST_DIR/../../../shared/crds/<file>`, or None after printing why the test
/// is skipped.
pub fn shared_crd(file: &str) -> Option<PathBuf> {
    let p = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("../../../shared/crds")
        .join(file);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "\n==========\nSKIPPED: ../shared/crds not found ({} is missing; the real upstream CRDs live outside \
             the repository and are never copied into it). This test checks CRD schema validation against them.\n==========\n",
            p.display()
        );
        None
    }
}
