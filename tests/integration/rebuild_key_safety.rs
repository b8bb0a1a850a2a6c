//! No key lost between Vault's `sys/init` and the committed offline backup (issue 15): a
//! Ctrl-C there waits for the backup, and a kill there (after the key reached the unseal
//! Secret) is recovered by the rerun, which proves the Secret's key on the sealed Vault and
//! writes the backup from it. Both end with one key, in the backup and the Secret, that
//! unsealed Vault.

use crate::common;
use common::describe;
use std::process::{Command, Output};

use base64::Engine;
use common::{lab_bundle, Lab};
use rebox_lab::server::LabOptions;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The share in the offline backup, decrypted by the stock age CLI.
fn backup_share(lab: &Lab) -> String {
    let (id, _) = lab.age_identity();
    let plain = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&id)
        .arg(lab.backup_path())
        .output()
        .unwrap();
    assert!(plain.status.success(), "age -d: {}", text(&plain.stderr));
    let doc: toml::Value = toml::from_str(&text(&plain.stdout)).unwrap();
    doc["unseal"]["shares"][0]["key"]
        .as_str()
        .expect("a share in the backup")
        .to_string()
}

fn secret_share(lab: &Lab) -> String {
    let b64 = lab.kubectl("-n security get secret vault-unseal-key -o jsonpath='{.data.key}'");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap();
    String::from_utf8(raw).unwrap().trim().to_string()
}

/// The rerun completes, and the key of the backup is the Secret's and unsealed Vault.
fn rerun_finishes_with_one_key(lab: &Lab, bundle: &std::path::Path) -> Output {
    let out = lab
        .rebox_with_keys(&["--yes", "rebuild"], bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "rerun: {}", describe(&out));
    assert!(
        text(&out.stdout).contains("Rebuild finished"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        backup_share(lab),
        secret_share(lab),
        "backup and Secret differ"
    );
    let ready = lab.kubectl(
        "-n security get pod vault-0 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'",
    );
    assert_eq!(ready.trim(), "True", "Vault is not unsealed");
    out
}

#[test]
fn rebuild_ctrl_c_between_init_and_backup_waits_for_the_backup() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    // SIGINT arrives right after Vault answered sys/init (the seam sends it to rebox itself).
    let out = lab
        .rebox_with_keys(&["--yes", "rebuild"], &bundle)
        .env("REBOX_FAILPOINT_SIGNAL_AT", "vault-init:answered")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    assert!(
        stderr.contains("SIGINT (Ctrl-C) received; not stopping yet"),
        "{stderr}"
    );
    assert!(
        stderr.contains("wrote the offline backup") && stderr.contains("stopping now"),
        "{stderr}"
    );
    assert!(
        stderr.find("wrote the offline backup") < stderr.find("stopping now"),
        "stopped before the backup: {stderr}"
    );
    let share = backup_share(&lab);
    assert_eq!(
        secret_share(&lab),
        share,
        "the second copy is not in the Secret"
    );
    let rerun = rerun_finishes_with_one_key(&lab, &bundle);
    assert!(
        text(&rerun.stderr).contains("resuming rebuild"),
        "{}",
        describe(&rerun)
    );
    assert_eq!(backup_share(&lab), share, "the rerun made another key");
}

#[test]
fn rebuild_killed_between_init_and_backup_recovers_the_key_from_the_secret() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    // Killed after the key reached the Secret, before the backup was written.
    let out = lab
        .rebox_with_keys(&["--yes", "rebuild"], &bundle)
        .env("REBOX_FAILPOINT_EXIT_AFTER", "vault-init:secret-written")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(86), "{}", describe(&out));
    assert!(
        !lab.backup_path().exists(),
        "the backup was written before the kill"
    );
    let share = secret_share(&lab);
    assert!(!share.is_empty());
    let rerun = rerun_finishes_with_one_key(&lab, &bundle);
    assert!(
        text(&rerun.stderr).contains("unsealed Vault; wrote the offline backup"),
        "{}",
        describe(&rerun)
    );
    assert_eq!(
        backup_share(&lab),
        share,
        "the backup is not the initialised key"
    );
    for stream in [&rerun.stdout, &rerun.stderr, &out.stdout, &out.stderr] {
        assert!(!text(stream).contains(&share), "the key was printed");
    }
}
