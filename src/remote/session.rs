//! Opening the one SSH connection of a run: resolve the target (flags, rebox.toml,
//! ~/.ssh/config), check the host key before anything else, then authenticate with the
//! ssh-agent and key files.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use russh::client;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey};
use zeroize::Zeroizing;

use super::known_hosts::{self, Verdict};
use super::RemoteError;
use crate::config;

/// Where to connect, after flags, rebox.toml and ~/.ssh/config have been merged.
#[derive(Debug, Clone)]
pub struct Target {
    /// The name the operator gave (may be a ~/.ssh/config alias).
    pub alias: String,
    /// The host actually dialled and recorded in known_hosts.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    pub connect_timeout: Duration,
    pub keepalive: Duration,
}

impl Target {
    /// Merges the `[server]` table (flags already applied) with ~/.ssh/config.
    /// Explicit values win over ~/.ssh/config, which wins over the defaults.
    pub fn resolve(server: &config::Server) -> Result<Target> {
        if server.host.trim().is_empty() {
            anyhow::bail!(crate::next::hinted(
                "no server given",
                "pass --host HOST, or set [server] host in rebox.toml (`rebox init`)"
            ));
        }
        let ssh = match russh_config::parse_home(&server.host) {
            Ok(c) => Some(c.host_config),
            Err(russh_config::Error::Io(_)) | Err(russh_config::Error::NoHome) => None,
            Err(e) => {
                tracing::warn!("ignoring ~/.ssh/config: {e}");
                None
            }
        };
        let ssh = ssh.unwrap_or_default();
        let identity_files = if !server.identity_files.is_empty() {
            server
                .identity_files
                .iter()
                .map(|p| expand_tilde(p))
                .collect()
        } else {
            ssh.identity_file
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|p| expand_tilde(p))
                .collect()
        };
        Ok(Target {
            alias: server.host.clone(),
            host: ssh.hostname.clone().unwrap_or_else(|| server.host.clone()),
            port: server.port.or(ssh.port).unwrap_or(22),
            user: server
                .user
                .clone()
                .or(ssh.user.clone())
                .unwrap_or_else(|| "homelab".into()),
            identity_files,
            connect_timeout: Duration::from_secs(server.connect_timeout_secs.max(1)),
            keepalive: Duration::from_secs(server.keepalive_secs.max(1)),
        })
    }

    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn expand_tilde(p: &std::path::Path) -> PathBuf {
    match (p.strip_prefix("~"), dirs::home_dir()) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => p.to_path_buf(),
    }
}

/// What the SSH layer may ask a human. The caller gives it (the terminal, in the binary), so
/// this layer prompts for nothing itself.
pub trait Asker: Send + Sync {
    /// A host key not yet in known_hosts: record it and continue?
    fn new_host_key(&self, host: &str, fingerprint: &str) -> Result<bool>;
    /// The passphrase of an encrypted private key file.
    fn key_passphrase(&self, path: &std::path::Path) -> Result<Zeroizing<String>>;
}

/// How to treat the server's host key, and who can be asked.
#[derive(Clone)]
pub struct HostKeyPolicy {
    pub known_hosts: PathBuf,
    /// Record the key of a host not yet in known_hosts.
    pub accept_new: bool,
    /// Accept exactly this fingerprint in place of the recorded key (a rebuilt server).
    pub replace: Option<String>,
    /// Who can be asked about an unknown key or a key file's passphrase; None: nobody (a
    /// script, `--yes`).
    pub ask: Option<Arc<dyn Asker>>,
}

impl std::fmt::Debug for HostKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKeyPolicy")
            .field("known_hosts", &self.known_hosts)
            .field("accept_new", &self.accept_new)
            .field("replace", &self.replace)
            .field("interactive", &self.ask.is_some())
            .finish()
    }
}

/// What happened to the host key on this connection (for reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyNote {
    Known,
    Recorded,
    Replaced { old_entries: usize },
}

/// The outcome of the host key check, kept so a refused connection reports why.
enum KeyDecision {
    Accepted(HostKeyNote, String),
    Refused(RemoteError),
    Failed(String),
}

pub(super) struct Handler {
    host: String,
    port: u16,
    policy: HostKeyPolicy,
    decision: Arc<Mutex<Option<KeyDecision>>>,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match offered {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            russh::keys::PublicKeyOrCertificate::Certificate(cert) => {
                PublicKey::from(cert.public_key().clone())
            }
        };
        let decision = match decide(&self.host, self.port, &self.policy, &key) {
            Ok(d) => d,
            Err(e) => KeyDecision::Failed(format!("{e:#}")),
        };
        let accepted = matches!(decision, KeyDecision::Accepted(..));
        *self.decision.lock().expect("decision lock") = Some(decision);
        Ok(accepted)
    }
}

fn decide(host: &str, port: u16, policy: &HostKeyPolicy, key: &PublicKey) -> Result<KeyDecision> {
    let fp = known_hosts::fingerprint(key);
    let name = known_hosts::host_port_name(host, port);
    let path = &policy.known_hosts;
    let verdict = known_hosts::check(path, host, port, key)?;
    tracing::debug!(host = %name, fingerprint = %fp, ?verdict, "host key check");
    let replace_matches = policy
        .replace
        .as_deref()
        .map(|want| fingerprints_equal(want, &fp));
    Ok(match verdict {
        Verdict::Known => KeyDecision::Accepted(HostKeyNote::Known, fp),
        Verdict::Revoked { line } => KeyDecision::Refused(RemoteError::HostKeyRevoked {
            host: name,
            fingerprint: fp,
            known_hosts: path.clone(),
            line,
        }),
        Verdict::Changed { lines } => match replace_matches {
            Some(true) => {
                known_hosts::replace(path, host, port, key, &lines)?;
                eprintln!(
                    "replaced the host key of {name} in {}: {} old entr{} removed, {fp} recorded",
                    path.display(),
                    lines.len(),
                    if lines.len() == 1 { "y" } else { "ies" }
                );
                KeyDecision::Accepted(
                    HostKeyNote::Replaced {
                        old_entries: lines.len(),
                    },
                    fp,
                )
            }
            Some(false) => KeyDecision::Refused(RemoteError::ReplaceMismatch {
                host: name,
                expected: policy.replace.clone().unwrap_or_default(),
                fingerprint: fp,
            }),
            None => KeyDecision::Refused(RemoteError::HostKeyChanged {
                host: name,
                fingerprint: fp,
                known_hosts: path.clone(),
                lines: lines
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            }),
        },
        Verdict::Unknown => {
            let accept = match replace_matches {
                Some(true) => true,
                Some(false) => {
                    return Ok(KeyDecision::Refused(RemoteError::ReplaceMismatch {
                        host: name,
                        expected: policy.replace.clone().unwrap_or_default(),
                        fingerprint: fp,
                    }))
                }
                None => {
                    policy.accept_new
                        || match &policy.ask {
                            Some(ask) => ask_unknown(ask.as_ref(), &name, &fp)?,
                            None => false,
                        }
                }
            };
            if accept {
                known_hosts::record(path, host, port, key)?;
                eprintln!("recorded the host key {fp} of {name} in {}", path.display());
                KeyDecision::Accepted(HostKeyNote::Recorded, fp)
            } else {
                KeyDecision::Refused(RemoteError::HostKeyUnknown {
                    host: name,
                    fingerprint: fp,
                    known_hosts: path.clone(),
                })
            }
        }
    })
}

/// `SHA256:abc` and `abc` name the same key; base64 is case-sensitive, so no case folding.
fn fingerprints_equal(given: &str, actual: &str) -> bool {
    let strip = |s: &str| {
        s.trim()
            .trim_start_matches("SHA256:")
            .trim_end_matches('=')
            .to_string()
    };
    strip(given) == strip(actual)
}

fn ask_unknown(ask: &dyn Asker, name: &str, fp: &str) -> Result<bool> {
    tokio::task::block_in_place(|| ask.new_host_key(name, fp))
}

/// An authenticated SSH connection to the server. Clones share the one connection.
#[derive(Clone)]
pub struct Remote {
    pub(super) handle: Arc<client::Handle<Handler>>,
    pub target: Target,
    pub host_key_fingerprint: String,
    pub host_key_note: HostKeyNote,
    /// How we authenticated, e.g. "ssh-agent key SHA256:…" or "key file ~/.ssh/id_ed25519".
    pub auth_method: String,
}

impl Remote {
    /// Connects, checks the host key and authenticates. Errors are [`RemoteError`]s where the
    /// operator has something to fix.
    pub async fn connect(target: Target, policy: HostKeyPolicy) -> Result<Remote> {
        let addr = target.addr();
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(target.keepalive),
            keepalive_max: 3,
            window_size: 16 * 1024 * 1024,
            maximum_packet_size: 65535,
            nodelay: true,
            ..Default::default()
        });
        let decision = Arc::new(Mutex::new(None));
        let ask = policy.ask.clone();
        let handler = Handler {
            host: target.host.clone(),
            port: target.port,
            policy,
            decision: decision.clone(),
        };
        let secs = target.connect_timeout.as_secs();
        let stream = tokio::time::timeout(
            target.connect_timeout,
            tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| RemoteError::Timeout {
            addr: addr.clone(),
            secs,
        })?
        .map_err(|e| RemoteError::Unreachable {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
        stream.set_nodelay(true).ok();
        let connected = tokio::time::timeout(
            target.connect_timeout,
            client::connect_stream(config, stream, handler),
        )
        .await
        .map_err(|_| RemoteError::Timeout {
            addr: addr.clone(),
            secs,
        })?;
        let taken = decision.lock().expect("decision lock").take();
        let (mut handle, note, fingerprint) = match (connected, taken) {
            (Ok(h), Some(KeyDecision::Accepted(note, fp))) => (h, note, fp),
            (_, Some(KeyDecision::Refused(e))) => return Err(e.into()),
            (_, Some(KeyDecision::Failed(e))) => {
                anyhow::bail!("checking the host key of {addr}: {e}")
            }
            (Err(e), _) => {
                return Err(RemoteError::Unreachable {
                    addr,
                    reason: format!("SSH handshake failed: {e}"),
                }
                .into())
            }
            (Ok(_), _) => {
                anyhow::bail!("the SSH handshake with {addr} finished without a host key check")
            }
        };
        let auth_method = authenticate(&mut handle, &target, ask.as_deref()).await?;
        tracing::info!(host = %addr, user = %target.user, method = %auth_method, "connected");
        Ok(Remote {
            handle: Arc::new(handle),
            target,
            host_key_fingerprint: fingerprint,
            host_key_note: note,
            auth_method,
        })
    }

    /// Whether the connection is still up.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Turns a russh error into a "connection dropped" error when the link is gone.
    pub(super) fn link_error(&self, e: impl std::fmt::Display, doing: &str) -> anyhow::Error {
        if self.handle.is_closed() {
            RemoteError::Dropped {
                host: self.target.addr(),
                reason: format!("{doing}: {e}"),
            }
            .into()
        } else {
            anyhow::anyhow!("{doing} on {}: {e}", self.target.addr())
        }
    }

    /// Closes the connection politely.
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

async fn authenticate(
    handle: &mut client::Handle<Handler>,
    target: &Target,
    ask: Option<&dyn Asker>,
) -> Result<String> {
    let user = target.user.clone();
    let mut tried = Vec::new();
    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();

    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match AgentClient::connect_env().await {
            Ok(mut agent) => {
                let ids = agent.request_identities().await.unwrap_or_default();
                for id in ids {
                    let key = id.public_key().into_owned();
                    let fp = known_hosts::fingerprint(&key);
                    tried.push(format!("agent key {fp}"));
                    let hash = if key.algorithm().is_rsa() {
                        rsa_hash
                    } else {
                        None
                    };
                    match handle
                        .authenticate_publickey_with(&user, key, hash, &mut agent)
                        .await
                    {
                        Ok(r) if r.success() => return Ok(format!("ssh-agent key {fp}")),
                        Ok(_) => {}
                        Err(e) => tracing::debug!("agent key {fp} failed: {e}"),
                    }
                }
            }
            Err(e) => tracing::debug!("ssh-agent unavailable: {e}"),
        }
    }

    let files = if target.identity_files.is_empty() {
        default_identity_files()
    } else {
        target.identity_files.clone()
    };
    for path in files {
        let key = match load_key(&path, ask) {
            Ok(Some(k)) => k,
            Ok(None) => {
                tried.push(format!(
                    "{} (encrypted; no terminal to ask its passphrase: add it to ssh-agent)",
                    path.display()
                ));
                continue;
            }
            Err(e) => {
                if !target.identity_files.is_empty() {
                    return Err(e);
                }
                tracing::debug!("skipping {}: {e:#}", path.display());
                continue;
            }
        };
        tried.push(path.display().to_string());
        let hash = if key.algorithm().is_rsa() {
            rsa_hash
        } else {
            None
        };
        let result = handle
            .authenticate_publickey(&user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .with_context(|| format!("authenticating to {}", target.addr()))?;
        if result.success() {
            return Ok(format!("key file {}", path.display()));
        }
    }
    let copy_target = match target.port {
        22 => format!("{user}@{}", target.host),
        port => format!("-p {port} {user}@{}", target.host),
    };
    Err(RemoteError::AuthFailed {
        user,
        addr: target.addr(),
        copy_target,
        tried: if tried.is_empty() {
            "no keys found: no agent, no -i, no ~/.ssh/id_*".into()
        } else {
            tried.join(", ")
        },
    }
    .into())
}

fn default_identity_files() -> Vec<PathBuf> {
    let Some(home) = dirs::home_dir() else {
        return Vec::new();
    };
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|n| home.join(".ssh").join(n))
        .filter(|p| p.exists())
        .collect()
}

/// Loads a private key; `Ok(None)` when it is encrypted and nobody can be asked.
fn load_key(
    path: &std::path::Path,
    ask: Option<&dyn Asker>,
) -> Result<Option<russh::keys::PrivateKey>> {
    match russh::keys::load_secret_key(path, None) {
        Ok(k) => Ok(Some(k)),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let Some(ask) = ask else {
                return Ok(None);
            };
            let pass = tokio::task::block_in_place(|| ask.key_passphrase(path))?;
            russh::keys::load_secret_key(path, Some(pass.as_str()))
                .map(Some)
                .with_context(|| format!("decrypting {} (wrong passphrase?)", path.display()))
        }
        Err(e) => Err(anyhow::anyhow!("reading SSH key {}: {e}", path.display())),
    }
}
