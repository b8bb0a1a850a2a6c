//! The files k3s writes for its clients: the admin kubeconfig (`/etc/rancher/k3s/k3s.yaml` by
//! default, mode from `write-kubeconfig-mode`, else 0600) and the server token files
//! (`<data-dir>/server/token`, `node-token` as a symlink to it, `agent-token`).
//!
//! Contract followed: k3s's `writeKubeConfig` layout (cluster/context/user all named
//! `default`, `server: https://127.0.0.1:<port>`, CA and admin client certificate inline)
//! and the secure token form `K10<sha256 of the CA bundle>::server:<secret>`.
//! Left out: the supervisor's token-authenticated endpoints (agents cannot join).

use std::path::Path;

use base64::Engine;
use rand::Rng;
use sha2::{Digest, Sha256};

use super::store::write_atomic;
use super::tls::Pki;

pub fn write_kubeconfig(path: &Path, server: &str, pki: &Pki, mode: u32) -> anyhow::Result<()> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let text = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&pki.ca_pem),
        b64(&pki.client_cert_pem),
        b64(&pki.client_key_pem),
    );
    write_atomic(path, text.as_bytes(), mode)?;
    // write_atomic's mode applies to new files only; make an existing file match too.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Writes the token files once; later starts keep the existing secret.
pub fn write_tokens(data_dir: &Path, pki: &Pki) -> anyhow::Result<()> {
    let dir = data_dir.join("server");
    let token = dir.join("token");
    if !token.exists() {
        let hash = hex::encode(Sha256::digest(pki.ca_pem.as_bytes()));
        let secret: [u8; 16] = rand::thread_rng().gen();
        write_atomic(
            &token,
            format!("K10{hash}::server:{}\n", hex::encode(secret)).as_bytes(),
            0o600,
        )?;
        let agent: [u8; 16] = rand::thread_rng().gen();
        write_atomic(
            &dir.join("agent-token"),
            format!("K10{hash}::node:{}\n", hex::encode(agent)).as_bytes(),
            0o600,
        )?;
    }
    let node = dir.join("node-token");
    if std::fs::symlink_metadata(&node).is_err() {
        std::os::unix::fs::symlink("token", &node)?;
    }
    Ok(())
}
