//! Failures of the SSH link that the operator must act on, each with the next step.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot reach {addr}: {reason}\n  next: check that the server is on and that host and port are right (`--host`, `--port`, rebox.toml [server])")]
    Unreachable { addr: String, reason: String },

    #[error("timed out after {secs}s connecting to {addr}\n  next: check the address and the network path; raise --connect-timeout on slow links")]
    Timeout { addr: String, secs: u64 },

    #[error("the host key of {host} is not known (not in {}).\n  Its fingerprint is {fingerprint}\n  next: compare it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the server's console, then rerun with --accept-new-host-key", known_hosts.display())]
    HostKeyUnknown {
        host: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },

    #[error("the host key of {host} has CHANGED (the server offered {fingerprint}; {} line(s) {lines} hold another key).\n  Nothing was sent to the server.\n  next: if you rebuilt or reinstalled this server, read its fingerprint on its console (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`) and rerun with --replace-host-key <that SHA256:… fingerprint>.\n  If you did not, someone may be intercepting the connection: stop here.", known_hosts.display())]
    HostKeyChanged {
        host: String,
        fingerprint: String,
        known_hosts: PathBuf,
        lines: String,
    },

    #[error("--replace-host-key {expected} does not match the key {host} offered ({fingerprint}); refusing it.\n  next: read the fingerprint again on the server's console; if it really is {fingerprint}, someone else may have the address")]
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

    #[error("{addr} refused every key for user `{user}` (tried: {tried})\n  next: check --user, or authorize your key: `ssh-copy-id -i KEY.pub {copy_target}`; pass the key with -i")]
    AuthFailed {
        user: String,
        addr: String,
        copy_target: String,
        tried: String,
    },

    #[error("sudo on the server wants a password for `{user}`; rebox needs passwordless sudo\n  next: on the server run `echo '{user} ALL=(ALL) NOPASSWD:ALL' | sudo tee /etc/sudoers.d/{user}`")]
    SudoNeedsPassword { user: String },

    #[error("the SSH connection to {host} dropped: {reason}\n  next: check the network and rerun; long operations resume where they stopped")]
    Dropped { host: String, reason: String },
}
