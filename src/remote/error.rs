//! Failures of the SSH link that the operator must act on; [`RemoteError::next`] gives each
//! one's next step, printed once, last (see `crate::next`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },

    #[error("timed out after {secs}s connecting to {addr}")]
    Timeout { addr: String, secs: u64 },

    #[error("the host key of {host} is not known (not in {}).\n  Its fingerprint is {fingerprint}", known_hosts.display())]
    HostKeyUnknown {
        host: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },

    #[error("the host key of {host} has CHANGED (the server offered {fingerprint}; {} line(s) {lines} hold another key).\n  Nothing was sent to the server.", known_hosts.display())]
    HostKeyChanged {
        host: String,
        fingerprint: String,
        known_hosts: PathBuf,
        lines: String,
    },

    #[error("--replace-host-key {expected} does not match the key {host} offered ({fingerprint}); refusing it.")]
    ReplaceMismatch {
        host: String,
        expected: String,
        fingerprint: String,
    },

    #[error("the host key {fingerprint} of {host} is marked @revoked in {} line {line}; refusing it", known_hosts.display())]
    HostKeyRevoked {
        host: String,
        fingerprint: String,
        known_hosts: PathBuf,
        line: usize,
    },

    #[error("{addr} refused every key for user `{user}` (tried: {tried})")]
    AuthFailed {
        user: String,
        addr: String,
        copy_target: String,
        tried: String,
    },

    #[error("sudo on the server wants a password for `{user}`; rebox needs passwordless sudo")]
    SudoNeedsPassword { user: String },

    #[error("a command on {host} did not finish within {secs}s and was abandoned: `{command}`")]
    CommandTimedOut {
        host: String,
        secs: u64,
        command: String,
    },

    #[error("the SSH connection to {host} dropped: {reason}")]
    Dropped { host: String, reason: String },
}

impl RemoteError {
    /// What the operator does next.
    pub fn next(&self) -> String {
        match self {
            RemoteError::Unreachable { .. } => "check that the server is on and that host and port are right (`--host`, `--port`, rebox.toml [server])".into(),
            RemoteError::Timeout { .. } => "check the address and the network path; raise --connect-timeout on slow links".into(),
            RemoteError::HostKeyUnknown { .. } => "compare it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the server's console, then rerun with --accept-new-host-key".into(),
            RemoteError::HostKeyChanged { .. } => "if you rebuilt or reinstalled this server, read its fingerprint on its console (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`) and rerun with --replace-host-key <that SHA256:… fingerprint>; if you did not, someone may be intercepting the connection: stop here".into(),
            RemoteError::ReplaceMismatch { fingerprint, .. } => format!("read the fingerprint again on the server's console; if it really is {fingerprint}, someone else may have the address"),
            RemoteError::HostKeyRevoked { .. } => "do not connect: you marked this key compromised; on the server's console make new host keys (`ssh-keygen -A`, then restart sshd) and accept the new one".into(),
            RemoteError::AuthFailed { copy_target, .. } => format!("check --user, or authorize your key: `ssh-copy-id -i KEY.pub {copy_target}`; pass the key with -i"),
            RemoteError::SudoNeedsPassword { user } => format!("on the server run `echo '{user} ALL=(ALL) NOPASSWD:ALL' | sudo tee /etc/sudoers.d/{user}`"),
            RemoteError::CommandTimedOut { .. } => "look on the server for what hangs (`ps -ef`; a NAS that stopped answering, apt waiting for a lock), then rerun: long operations resume where they stopped".into(),
            RemoteError::Dropped { .. } => "check the network and rerun; long operations resume where they stopped".into(),
        }
    }
}
