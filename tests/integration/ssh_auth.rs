//! Authentication paths against a real lab sshd: ~/.ssh/config aliases, the ssh-agent, RSA
//! and ECDSA key files, and an encrypted key in a run that cannot ask for its passphrase.

use crate::common;
use std::path::Path;
use std::process::Command;

use common::{check, status, Lab};
use rebox_lab::server::LabOptions;

fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", passphrase, "-C", "test", "-f"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn pubkey(path: &Path) -> String {
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

fn preflight(lab: &Lab, args: &[&str], envs: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = lab.rebox();
    cmd.arg("--json").arg("preflight").args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn preflight_follows_an_ssh_config_alias() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let ssh_dir = lab.dir.path().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    std::fs::write(
        ssh_dir.join("config"),
        format!(
            "Host homelab-box\n  HostName {}\n  User {}\n  IdentityFile {}\n",
            lab.server.addr(),
            lab.server.user(),
            lab.server.client_key().display()
        ),
    )
    .unwrap();
    // The config file names no host and no user: everything comes from ~/.ssh/config.
    std::fs::write(
        lab.dir.path().join("rebox.toml"),
        format!(
            "[nas]\nbackup_target = \"nfs://{}:/b\"\n",
            lab.server.host_addr()
        ),
    )
    .unwrap();
    let report = preflight(
        &lab,
        &[
            "--host",
            "homelab-box",
            "--known-hosts",
            lab.known_hosts().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(report["ok"], true, "{report:#}");
    let auth = check(&report, "auth")["detail"].as_str().unwrap();
    assert!(
        auth.contains(&lab.server.client_key().display().to_string()),
        "{auth}"
    );
}

#[test]
fn preflight_authenticates_with_the_ssh_agent() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let sock = lab.dir.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "ssh-agent did not start"
        );
        std::thread::yield_now();
    }
    let added = Command::new("ssh-add")
        .arg(lab.server.client_key())
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    // No -i: the only way in is the agent.
    let report = preflight(
        &lab,
        &["--known-hosts", lab.known_hosts().to_str().unwrap()],
        &[("SSH_AUTH_SOCK", sock.to_str().unwrap())],
    );
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(status(&report, "auth"), "pass", "{report:#}");
    assert!(check(&report, "auth")["detail"]
        .as_str()
        .unwrap()
        .contains("ssh-agent"));
}

#[test]
fn preflight_accepts_rsa_and_ecdsa_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = dir.path().join("id_rsa");
    let ecdsa = dir.path().join("id_ecdsa");
    keygen(&rsa, "rsa", "");
    keygen(&ecdsa, "ecdsa", "");
    let lab = Lab::start(LabOptions {
        extra_authorized_keys: vec![pubkey(&rsa), pubkey(&ecdsa)],
        ..Default::default()
    });
    lab.trust();
    for key in [&rsa, &ecdsa] {
        let report = preflight(
            &lab,
            &[
                "-i",
                key.to_str().unwrap(),
                "--known-hosts",
                lab.known_hosts().to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(
            status(&report, "auth"),
            "pass",
            "{}: {report:#}",
            key.display()
        );
    }
}

#[test]
fn preflight_encrypted_key_without_a_terminal_says_to_use_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("id_locked");
    keygen(&locked, "ed25519", "correct horse battery");
    let lab = Lab::start(LabOptions {
        extra_authorized_keys: vec![pubkey(&locked)],
        ..Default::default()
    });
    lab.trust();
    let report = preflight(
        &lab,
        &[
            "-i",
            locked.to_str().unwrap(),
            "--known-hosts",
            lab.known_hosts().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(status(&report, "auth"), "fail", "{report:#}");
    let detail = check(&report, "auth")["detail"].as_str().unwrap();
    assert!(
        detail.contains("encrypted") && detail.contains("ssh-agent"),
        "{detail}"
    );
}
