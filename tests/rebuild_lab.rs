//! `rebox rebuild` (k3s half) against a lab server: the real binary over real SSH, the k3s
//! stand-in uploaded from a bundle and started by the lab's systemctl, node Ready through the
//! tunnel. Reruns and interruptions resume; a bad checksum or a foreign k3s is refused.

mod common;

use std::time::{Duration, Instant};

use common::{lab_bundle, sha256_hex, Lab};
use rebox_lab::server::LabOptions;

fn rebuild(lab: &Lab, bundle: &std::path::Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    lab.rebox()
        .arg("--yes")
        .arg("rebuild")
        .args(lab.conn_args())
        .arg("--bundle")
        .arg(bundle)
        .args(extra)
        .assert()
}

#[test]
fn rebuild_installs_k3s_and_a_rerun_has_nothing_left_to_do() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    let out = rebuild(&lab, &bundle, &[]).success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.contains("Rebuild finished"), "{stdout}");

    // What landed on the server's disk.
    assert_eq!(
        sha256_hex(&lab.server.path("/usr/local/bin/k3s")),
        sha256_hex(&bundle.join("k3s"))
    );
    let unit = std::fs::read_to_string(lab.server.path("/etc/systemd/system/k3s.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/k3s server"),
        "{unit}"
    );
    let config = std::fs::read_to_string(lab.server.path("/etc/rancher/k3s/config.yaml")).unwrap();
    assert!(
        config.contains("write-kubeconfig-mode: \"0600\""),
        "{config}"
    );
    assert_eq!(
        lab.server
            .run_as_root_ok("stat -c %a /etc/rancher/k3s/config.yaml")
            .unwrap()
            .trim(),
        "600"
    );
    assert_eq!(
        lab.server
            .run_as_root_ok("systemctl is-active k3s")
            .unwrap()
            .trim(),
        "active"
    );
    assert!(lab
        .server
        .run_as_root_ok("dpkg-query -W -f='${db:Status-Abbrev}' open-iscsi")
        .unwrap()
        .starts_with("ii"));
    let journal = std::fs::read_to_string(lab.server.path("/var/lib/rebox/journal.json")).unwrap();
    assert!(journal.contains("k3s-running"), "{journal}");

    // Real kubectl on the server sees the Ready node the k3s stand-in registered.
    let nodes = lab
        .server
        .run_as_root_ok("KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl get nodes -o jsonpath='{.items[*].status.conditions[?(@.type==\"Ready\")].status}'")
        .unwrap();
    assert_eq!(nodes.trim(), "True");

    // The addons went in through k3s's helm-controller: every chart's install Job completed.
    for chart in ["longhorn", "vault"] {
        let done = lab
            .server
            .run_as_root_ok(&format!(
                "KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl -n kube-system get job helm-install-{chart} -o jsonpath='{{.status.succeeded}}'"
            ))
            .unwrap();
        assert_eq!(done.trim(), "1", "chart {chart} not installed");
    }
    let pvc = lab
        .server
        .run_as_root_ok("KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl -n security get pvc vault-data-lh -o name")
        .unwrap();
    assert_eq!(pvc.trim(), "persistentvolumeclaim/vault-data-lh");

    // A second run finds everything done.
    let out = rebuild(&lab, &bundle, &[]).success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert_eq!(stdout.matches("already done").count(), 8, "{stdout}");
}

#[test]
fn rebuild_refuses_a_k3s_binary_whose_checksum_does_not_match() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    // One flipped byte in the binary on the stick.
    let mut bytes = std::fs::read(bundle.join("k3s")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(bundle.join("k3s"), bytes).unwrap();
    let out = rebuild(&lab, &bundle, &[]).failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("checksum mismatch") && stderr.contains("Nothing was sent"),
        "{stderr}"
    );
    assert!(!lab.server.path("/usr/local/bin/k3s").exists());
    assert!(
        !lab.server.path("/var/lib/rebox/journal.json").exists(),
        "the server was touched"
    );
}

#[test]
fn rebuild_refuses_an_existing_k3s_without_force() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    lab.server
        .run_as_root_ok("mkdir -p /etc/rancher/k3s && echo old > /etc/rancher/k3s/k3s.yaml")
        .unwrap();
    let out = rebuild(&lab, &bundle, &[]).failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("already has k3s") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(
        !lab.server.path("/usr/local/bin/k3s").exists(),
        "the rebuild went on"
    );
    rebuild(&lab, &bundle, &["--force"]).success();
}

#[test]
fn rebuild_killed_mid_upload_resumes_and_completes() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    let staging = lab.server.path("/home/homelab/.cache/rebox/uploads");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("rebox"))
        .env("HOME", lab.dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .arg("--config")
        .arg(lab.dir.path().join("rebox.toml"))
        .args(["--yes", "rebuild"])
        .args(lab.conn_args())
        .arg("--bundle")
        .arg(&bundle)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill the laptop side once part of the k3s binary is on the server.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let partial = std::fs::read_dir(&staging)
            .map(|d| {
                d.flatten()
                    .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                    .sum::<u64>()
            })
            .unwrap_or(0);
        if partial > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the upload never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "rebox finished before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !lab.server.path("/usr/local/bin/k3s").exists(),
        "a partial binary reached its place"
    );

    let out = rebuild(&lab, &bundle, &[]).success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("resuming rebuild"), "{stderr}");
    assert_eq!(
        sha256_hex(&lab.server.path("/usr/local/bin/k3s")),
        sha256_hex(&bundle.join("k3s"))
    );
    assert_eq!(
        lab.server
            .run_as_root_ok("systemctl is-active k3s")
            .unwrap()
            .trim(),
        "active"
    );
}
