//! Shared helpers for integration tests that drive `rebox` against lab servers.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use rebox_lab::server::{LabOptions, LabServer};

/// A lab server plus a scratch dir on the laptop side (known_hosts, rebox.toml).
pub struct Lab {
    pub server: LabServer,
    pub dir: tempfile::TempDir,
    /// Stands in for the NAS's NFS port on the host side of the lab's veth.
    pub nas: TcpListener,
}

impl Lab {
    pub fn start(opts: LabOptions) -> Lab {
        let server = LabServer::start(opts).expect("starting a lab server");
        let dir = tempfile::tempdir().unwrap();
        let nas =
            TcpListener::bind((server.host_addr(), 2049)).expect("binding the NAS stand-in port");
        let config = format!(
            "[server]\nhost = \"{}\"\nuser = \"{}\"\n\n[nas]\nbackup_target = \"nfs://{}:/backups\"\n\n[argocd]\nrepo_url = \"https://git.example.invalid/homelab.git\"\n",
            server.addr(),
            server.user(),
            server.host_addr()
        );
        std::fs::write(dir.path().join("rebox.toml"), config).unwrap();
        Lab { server, dir, nas }
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// Writes known_hosts with the lab's current host key.
    pub fn trust(&self) {
        std::fs::write(
            self.known_hosts(),
            format!("{}\n", self.server.known_hosts_line()),
        )
        .unwrap();
    }

    /// `rebox` with this lab's config, key and known_hosts, never interactive.
    pub fn rebox(&self) -> Command {
        let mut cmd = Command::cargo_bin("rebox").unwrap();
        cmd.env("HOME", self.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .arg("--config")
            .arg(self.dir.path().join("rebox.toml"));
        cmd
    }

    /// The operator's age identity on the laptop (made once per lab) and its public key.
    pub fn age_identity(&self) -> (PathBuf, String) {
        let id = self.dir.path().join("id.age");
        if !id.exists() {
            let out = std::process::Command::new("age-keygen")
                .arg("-o")
                .arg(&id)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "age-keygen: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = std::process::Command::new("age-keygen")
            .arg("-y")
            .arg(&id)
            .output()
            .unwrap();
        (
            id,
            String::from_utf8(out.stdout).unwrap().trim().to_string(),
        )
    }

    /// Where rebuilds in tests write the offline unseal-key backup.
    pub fn backup_path(&self) -> PathBuf {
        self.dir.path().join("vault-key.age")
    }

    /// `rebox SUBCOMMAND…` with the lab's config, connection flags, the bundle and the offline
    /// backup flags (written to [`Lab::backup_path`] for [`Lab::age_identity`]).
    pub fn rebox_with_keys(&self, subcommand: &[&str], bundle: &Path) -> std::process::Command {
        let (id, public) = self.age_identity();
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("rebox"));
        cmd.env("HOME", self.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("REBOX_FAILPOINT_EXIT_AFTER")
            .arg("--config")
            .arg(self.dir.path().join("rebox.toml"))
            .args(subcommand)
            .args(self.conn_args())
            .arg("--bundle")
            .arg(bundle)
            .arg("--key-out")
            .arg(self.backup_path())
            .args(["--key-recipient", &public])
            .arg("--key-identity")
            .arg(id);
        cmd
    }

    /// Adds an operator's extra secret `name` = `value` to the offline backup at `file`, the
    /// way an operator does it: `rebox key export --from-stdin` of the backup's own shares with
    /// `--extra-from-env`, replacing the file (`--force`). A fresh rebuild's backup holds the
    /// unseal key only (no root token), so a test that wants an extra in it says so here.
    pub fn backup_with_extra(&self, file: &Path, name: &str, value: &str) {
        let (id, public) = self.age_identity();
        let doc = self.decrypted_backup(file);
        let shares = backup_shares_of(&doc);
        let threshold = doc["unseal"]["threshold"]
            .as_integer()
            .map(|t| t.to_string())
            .unwrap_or_else(|| shares.len().to_string());
        let share_count = doc["unseal"]["share_count"]
            .as_integer()
            .map(|t| t.to_string())
            .unwrap_or_else(|| shares.len().to_string());
        let mut extras = Vec::new();
        let mut envs = Vec::new();
        for (n, e) in doc
            .get("extra")
            .and_then(|x| x.as_array())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let var = format!("REBOX_TEST_EXTRA_{n}");
            extras.push(format!("{}={var}", e["name"].as_str().unwrap()));
            envs.push((var, e["value"].as_str().unwrap().to_string()));
        }
        extras.push(format!("{name}=REBOX_TEST_EXTRA_NEW"));
        envs.push(("REBOX_TEST_EXTRA_NEW".into(), value.to_string()));
        let mut cmd = self.rebox();
        cmd.args([
            "key",
            "export",
            "--from-stdin",
            "--force",
            "--threshold",
            &threshold,
        ])
        .args(["--share-count", &share_count])
        .args(["-r", &public, "-i"])
        .arg(&id)
        .arg("-o")
        .arg(file);
        for x in &extras {
            cmd.args(["--extra-from-env", x]);
        }
        for (k, v) in &envs {
            cmd.env(k, v);
        }
        let out = cmd.write_stdin(shares.join("\n") + "\n").output().unwrap();
        assert!(
            out.status.success(),
            "key export with extra {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The offline backup `file`, decrypted with the stock age CLI and this lab's identity.
    pub fn decrypted_backup(&self, file: &Path) -> toml::Value {
        let (id, _) = self.age_identity();
        let plain = std::process::Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&id)
            .arg(file)
            .output()
            .unwrap();
        assert!(
            plain.status.success(),
            "age -d {}: {}",
            file.display(),
            String::from_utf8_lossy(&plain.stderr)
        );
        toml::from_str(&String::from_utf8_lossy(&plain.stdout)).unwrap()
    }

    /// `bash -c shell` as root on the server with `stdin` piped in (a secret never goes on a
    /// command line); its output.
    pub fn root_with_stdin(&self, shell: &str, stdin: &str) -> std::process::Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self
            .server
            .command_as_root(shell)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Real kubectl on the lab server with the k3s kubeconfig; stdout.
    pub fn kubectl(&self, args: &str) -> String {
        self.server
            .run_as_root_ok(&format!(
                "KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl {args}"
            ))
            .unwrap()
    }

    /// The accessors of every root token Vault holds, found with a root token of the test's
    /// own (see [`Lab::as_vault_root`]) through `auth/token/accessors` and `lookup-accessor`.
    pub fn live_root_tokens(&self, shares: &[String]) -> Vec<String> {
        serde_json::from_value(self.as_vault_root(shares, &serde_json::json!("roots"))).unwrap()
    }

    /// Writes `data` (a JSON object) under Vault's KV v2 mount `secret` at `key`, as an operator
    /// does, with a root token of the test's own (see [`Lab::as_vault_root`]).
    pub fn vault_kv_put(&self, shares: &[String], key: &str, data: serde_json::Value) {
        let answers = self.as_vault_root(
            shares,
            &serde_json::json!([["POST", format!("/v1/secret/data/{key}"), {"data": data}]]),
        );
        assert_eq!(answers[0][0], 200, "writing secret/{key}: {answers}");
    }

    /// Runs `program` against the lab's Vault as root: a token made here from `shares` (on
    /// stdin, never a command line) with sys/generate-root, revoked at the end. `program` is
    /// `"roots"` (the other root tokens' accessors) or a list of `[method, path, body]` calls
    /// (their `[status, body]` answers). Vault must be unsealed.
    pub fn as_vault_root(
        &self,
        shares: &[String],
        program: &serde_json::Value,
    ) -> serde_json::Value {
        let ip = self.kubectl("-n security get svc vault -o jsonpath='{.spec.clusterIP}'");
        let out = self.root_with_stdin(
            &format!(
                "python3 -c {} http://{}:8200 {}",
                rebox::remote::shell_quote(AS_VAULT_ROOT_PY),
                ip.trim(),
                rebox::remote::shell_quote(&program.to_string())
            ),
            &(shares.join("\n") + "\n"),
        );
        assert!(
            out.status.success(),
            "Vault as root: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// rebox's record of root tokens on the server (`/var/lib/rebox/vault-root-tokens.json`):
    /// its entries (Null when the file is absent).
    pub fn root_token_record(&self) -> serde_json::Value {
        match std::fs::read_to_string(self.server.path("/var/lib/rebox/vault-root-tokens.json")) {
            Ok(text) => {
                serde_json::from_str::<serde_json::Value>(&text).unwrap()["entries"].clone()
            }
            Err(_) => serde_json::Value::Null,
        }
    }

    /// The TokenRequests lab-k3s served, one `<ns>/<sa>` line each.
    pub fn token_requests(&self) -> String {
        std::fs::read_to_string(
            self.server
                .path("/var/lib/rancher/k3s/lab/token-requests.log"),
        )
        .unwrap_or_default()
    }

    /// Connection flags for subcommands that connect.
    pub fn conn_args(&self) -> Vec<String> {
        vec![
            "-i".into(),
            self.server.client_key().display().to_string(),
            "--known-hosts".into(),
            self.known_hosts().display().to_string(),
        ]
    }
}

/// Runs `rebox preflight --json` and returns (exit code, parsed report).
pub fn preflight_json(lab: &Lab, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = lab
        .rebox()
        .arg("--json")
        .arg("preflight")
        .args(lab.conn_args())
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("preflight printed no JSON ({e}); stderr: {stderr}"));
    (out.status.code().unwrap_or(-1), report, stderr)
}

/// The check with this id from a preflight report.
pub fn check<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report}"))
}

pub fn status<'a>(report: &'a serde_json::Value, id: &str) -> &'a str {
    check(report, id)["status"].as_str().unwrap()
}

pub fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// A bundle directory as the operator carries it: the k3s binary (here the lab's k3s
/// stand-in, built on demand) and SHA256SUMS.
pub fn lab_bundle(dir: &Path) -> PathBuf {
    // One cargo build per test binary, however many tests ask.
    static LAB_K3S: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let lab_k3s = LAB_K3S.get_or_init(|| {
        // vault-0 is OpenBao's real server, installed by scripts/setup (rebox_lab::bao).
        escargot::CargoBuild::new()
            .package("rebox-lab")
            .bin("lab-k3s")
            .run()
            .expect("building lab-k3s")
            .path()
            .to_path_buf()
    });
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::copy(lab_k3s, bundle.join("k3s")).unwrap();
    let sum = sha256_hex(&bundle.join("k3s"));
    std::fs::write(bundle.join("SHA256SUMS"), format!("{sum}  k3s\n")).unwrap();
    bundle
}

/// The shell command (run as root on the lab node) that seals Vault the way it happens for
/// real: vault-0's bao process killed, the kubelet starting it again sealed; it returns once
/// the new process answers sealed, or fails after 60 s.
pub fn restart_vault() -> String {
    rebox_lab::k3s::controllers::workloads::restart_vault_command(
        "security", "vault-0", "vault", 60,
    )
}

/// A finished command's status and both streams, for assertion messages.
pub fn describe(out: &std::process::Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The unseal shares of a decrypted backup document.
pub fn backup_shares_of(doc: &toml::Value) -> Vec<String> {
    doc["unseal"]["shares"]
        .as_array()
        .expect("shares in the backup")
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_string())
        .collect()
}

/// [`Lab::as_vault_root`]'s client, run on the node: Vault's HTTP API with the shares on
/// stdin and the program as its second argument; prints the program's answer as JSON.
const AS_VAULT_ROOT_PY: &str = r#"
import base64, json, sys, urllib.error, urllib.request
addr = sys.argv[1]
def call(method, path, body=None, token=None):
    req = urllib.request.Request(addr + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Vault-Token", token)
    try:
        with urllib.request.urlopen(req) as r:
            t = r.read()
            return r.status, json.loads(t) if t else {}
    except urllib.error.HTTPError as e:
        t = e.read()
        return e.code, json.loads(t) if t else {}
shares = [l.strip() for l in sys.stdin if l.strip()]
_, attempt = call("PUT", "/v1/sys/generate-root/attempt", {})
for k in shares:
    _, step = call("PUT", "/v1/sys/generate-root/update", {"key": k, "nonce": attempt["nonce"]})
    if step.get("complete"):
        break
enc = step["encoded_token"]
raw = base64.b64decode(enc + "=" * (-len(enc) % 4))
token = bytes(a ^ b for a, b in zip(raw, attempt["otp"].encode())).decode()
program = json.loads(sys.argv[2])
if program == "roots":
    _, me = call("GET", "/v1/auth/token/lookup-self", token=token)
    _, listed = call("LIST", "/v1/auth/token/accessors", token=token)
    answer = []
    for acc in listed["data"]["keys"]:
        if acc == me["data"]["accessor"]:
            continue
        status, info = call("POST", "/v1/auth/token/lookup-accessor", {"accessor": acc}, token=token)
        if status == 200 and "root" in info["data"]["policies"]:
            answer.append(acc)
else:
    answer = [list(call(m, p, b, token=token)) for m, p, b in program]
call("POST", "/v1/auth/token/revoke-self", token=token)
print(json.dumps(answer))
"#;
