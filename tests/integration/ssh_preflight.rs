//! `rebox preflight` against real lab servers (network namespace, real sshd and sudo):
//! the happy path and every refusal the foundation issue lists.

use crate::common;
use common::{check, preflight_json, status, Lab};
use rebox_lab::server::LabOptions;

#[test]
fn preflight_happy_path_passes_every_blocking_check() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let (code, report, stderr) = preflight_json(&lab, &[]);
    assert_eq!(code, 0, "preflight failed: {report:#}\n{stderr}");
    assert_eq!(report["ok"], true);
    for id in [
        "ssh", "host_key", "auth", "sudo", "os", "arch", "cpu", "memory", "disk", "ports", "k3s",
        "nas",
    ] {
        assert_eq!(status(&report, id), "pass", "{id}: {}", check(&report, id));
    }
    assert!(check(&report, "os")["detail"]
        .as_str()
        .unwrap()
        .contains("Ubuntu 26.04"));
    assert!(check(&report, "host_key")["detail"]
        .as_str()
        .unwrap()
        .contains(&lab.server.host_key_fingerprint()));
}

#[test]
fn preflight_human_output_has_one_line_per_check_with_fixes() {
    let lab = Lab::start(LabOptions {
        os_release: Some(DEBIAN.into()),
        ..Default::default()
    });
    lab.trust();
    let out = lab
        .rebox()
        .arg("preflight")
        .args(lab.conn_args())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[FAIL] operating system"), "{text}");
    assert!(text.contains("fix: install ubuntu 26.04"), "{text}");
    assert!(text.contains("[pass] passwordless sudo"), "{text}");
}

#[test]
fn preflight_changed_host_key_is_refused_before_authentication() {
    let lab = Lab::start(LabOptions::default());
    // known_hosts holds another key for this address (what a MITM or a rebuild looks like).
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINuCtxSZY4xjZEHhQBrbBmSsuwsz5/92DTn+i34Q9ai8";
    std::fs::write(
        lab.known_hosts(),
        format!("{} {other}\n", lab.server.addr()),
    )
    .unwrap();
    let (code, report, _) = preflight_json(&lab, &[]);
    assert_eq!(code, 2);
    assert_eq!(status(&report, "host_key"), "fail");
    assert!(check(&report, "host_key")["detail"]
        .as_str()
        .unwrap()
        .contains("CHANGED"));
    assert_eq!(status(&report, "auth"), "skip");
    assert_eq!(status(&report, "os"), "skip");
    // The server saw no authentication at all, so no command can have run.
    let log = lab.server.run_as_root_ok("cat /var/log/sshd.log").unwrap();
    assert!(
        !log.contains("Accepted publickey"),
        "sshd accepted a login:\n{log}"
    );
    // known_hosts is untouched.
    let kh = std::fs::read_to_string(lab.known_hosts()).unwrap();
    assert!(kh.contains(other) && !kh.contains(&lab.server.host_public_key_line()));
}

#[test]
fn preflight_rebuilt_server_accepts_only_the_fingerprint_given() {
    let mut lab = Lab::start(LabOptions::default());
    lab.trust();
    let old_fp = lab.server.host_key_fingerprint();
    lab.server.rebuild().unwrap();
    let new_fp = lab.server.host_key_fingerprint();
    assert_ne!(old_fp, new_fp);

    let (code, report, _) = preflight_json(&lab, &[]);
    assert_eq!(
        (code, status(&report, "host_key")),
        (2, "fail"),
        "a new key must not pass silently"
    );

    let (code, report, _) = preflight_json(&lab, &["--replace-host-key", &old_fp]);
    assert_eq!((code, status(&report, "host_key")), (2, "fail"));
    assert!(check(&report, "host_key")["detail"]
        .as_str()
        .unwrap()
        .contains("does not match"));
    let kh = std::fs::read_to_string(lab.known_hosts()).unwrap();
    assert!(
        !kh.contains(&lab.server.host_public_key_line()),
        "a refused key was recorded"
    );

    let (code, report, stderr) = preflight_json(&lab, &["--replace-host-key", &new_fp]);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert!(stderr.contains("replaced the host key"), "{stderr}");
    let kh = std::fs::read_to_string(lab.known_hosts()).unwrap();
    assert!(kh.contains(&lab.server.host_public_key_line()));
    assert_eq!(kh.lines().count(), 1, "the old entry must be gone:\n{kh}");

    // From now on the new key is simply known.
    let (code, report, _) = preflight_json(&lab, &[]);
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn preflight_unknown_host_is_refused_without_accept_new_host_key() {
    let lab = Lab::start(LabOptions::default());
    let (code, report, _) = preflight_json(&lab, &[]);
    assert_eq!(code, 2);
    assert_eq!(status(&report, "host_key"), "fail");
    let detail = check(&report, "host_key")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains(&lab.server.host_key_fingerprint()),
        "the fingerprint must be shown: {detail}"
    );
    assert!(
        !lab.known_hosts().exists()
            || std::fs::read_to_string(lab.known_hosts())
                .unwrap()
                .is_empty()
    );

    let (code, report, _) = preflight_json(&lab, &["--accept-new-host-key"]);
    assert_eq!(code, 0, "{report:#}");
    let kh = std::fs::read_to_string(lab.known_hosts()).unwrap();
    assert!(kh.contains(&lab.server.host_public_key_line()));
}

#[test]
fn preflight_hashed_known_hosts_entry_is_honoured() {
    let lab = Lab::start(LabOptions::default());
    // ssh-keygen -H hashes the host names in place, as HashKnownHosts does.
    lab.trust();
    let status_ok = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(lab.known_hosts())
        .output()
        .unwrap()
        .status
        .success();
    assert!(status_ok);
    let kh = std::fs::read_to_string(lab.known_hosts()).unwrap();
    assert!(kh.starts_with("|1|"), "{kh}");
    let (code, report, _) = preflight_json(&lab, &[]);
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn preflight_wrong_user_or_key_fails_authentication() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let (code, report, _) = preflight_json(&lab, &["--user", "nobody"]);
    assert_eq!((code, status(&report, "auth")), (2, "fail"));
    assert!(check(&report, "auth")["detail"]
        .as_str()
        .unwrap()
        .contains("nobody"));

    let stray = lab.dir.path().join("stray");
    assert!(std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stray)
        .status()
        .unwrap()
        .success());
    let out = lab
        .rebox()
        .arg("--json")
        .arg("preflight")
        .args([
            "-i",
            stray.to_str().unwrap(),
            "--known-hosts",
            lab.known_hosts().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status(&report, "auth"), "fail");
    assert!(check(&report, "auth")["remedy"]
        .as_str()
        .unwrap()
        .contains("ssh-copy-id"));
}

#[test]
fn preflight_sudo_that_wants_a_password_is_a_clear_failure() {
    let lab = Lab::start(LabOptions {
        sudo_nopasswd: false,
        ..Default::default()
    });
    lab.trust();
    let (code, report, _) = preflight_json(&lab, &[]);
    assert_eq!((code, status(&report, "sudo")), (2, "fail"));
    let sudo = check(&report, "sudo");
    assert!(
        sudo["detail"]
            .as_str()
            .unwrap()
            .contains("wants a password"),
        "{sudo}"
    );
    assert!(
        sudo["remedy"].as_str().unwrap().contains("NOPASSWD"),
        "{sudo}"
    );
}

const DEBIAN: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n";

#[test]
fn preflight_non_ubuntu_fails_unless_allow_os() {
    let lab = Lab::start(LabOptions {
        os_release: Some(DEBIAN.into()),
        ..Default::default()
    });
    lab.trust();
    let (code, report, _) = preflight_json(&lab, &[]);
    assert_eq!((code, status(&report, "os")), (2, "fail"));
    let (code, report, _) = preflight_json(&lab, &["--allow-os"]);
    assert_eq!((code, status(&report, "os")), (0, "warn"), "{report:#}");
}

#[test]
fn preflight_closed_ssh_port_is_unreachable() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    lab.server.stop_sshd().unwrap();
    let (code, report, _) = preflight_json(&lab, &[]);
    assert_eq!((code, status(&report, "ssh")), (2, "fail"));
    assert!(check(&report, "ssh")["detail"]
        .as_str()
        .unwrap()
        .contains("cannot reach"));
    assert_eq!(status(&report, "sudo"), "skip");
}

#[test]
fn preflight_detects_an_existing_k3s() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    lab.server
        .run_as_root_ok("mkdir -p /etc/rancher/k3s && touch /etc/rancher/k3s/k3s.yaml")
        .unwrap();
    let (code, report, _) = preflight_json(&lab, &[]);
    assert_eq!((code, status(&report, "k3s")), (2, "fail"));
    assert!(check(&report, "k3s")["detail"]
        .as_str()
        .unwrap()
        .contains("/etc/rancher/k3s/k3s.yaml"));
}

#[test]
fn preflight_unreachable_nas_fails() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    drop(lab.nas.try_clone().unwrap());
    // Point the NAS at a port nothing listens on.
    let cfg = lab.dir.path().join("rebox.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(":/backups", ":/backups-x")
        .replace("nfs://", "cifs://");
    std::fs::write(&cfg, text).unwrap();
    let (code, report, _) = preflight_json(&lab, &[]);
    assert_eq!((code, status(&report, "nas")), (2, "fail"), "{report:#}");
}
