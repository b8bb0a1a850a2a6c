//! Snapshot (insta) of `rebox plan --json` on a fresh lab server: every phase pending, with the
//! steps it would take. What varies between runs (the lab's addresses, the k3s stand-in's
//! sha256, the scratch dir, the age recipient) is replaced by placeholders before comparing.
//! Update with `cargo insta review` (or INSTA_UPDATE=always).

use crate::common;
use std::process::Command;

use common::{lab_bundle, sha256_hex, Lab};
use rebox_lab::server::LabOptions;

#[test]
fn rebuild_plan_json_snapshot_on_a_fresh_server() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    let (id, public) = lab.age_identity();
    let out = Command::new(assert_cmd::cargo::cargo_bin("rebox"))
        .env("HOME", lab.dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("REBOX_FAILPOINT_EXIT_AFTER")
        .arg("--config")
        .arg(lab.dir.path().join("rebox.toml"))
        .args(["--json", "plan"])
        .args(lab.conn_args())
        .arg("--bundle")
        .arg(&bundle)
        .arg("--key-out")
        .arg(lab.dir.path().join("vault-key.age"))
        .args(["--key-recipient", &public])
        .arg("--key-identity")
        .arg(&id)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "plan failed: {stderr}");
    let mut json = String::from_utf8(out.stdout).unwrap();

    // Longest first, so that a path is replaced before any address inside it.
    let sum = sha256_hex(&bundle.join("k3s"));
    let mut replacements: Vec<(String, String)> = vec![
        (lab.dir.path().display().to_string(), "[LABDIR]".into()),
        (public, "[AGE-RECIPIENT]".into()),
        (lab.server.addr().to_string(), "[LAB-ADDR]".into()),
        (lab.server.host_addr().to_string(), "[HOST-ADDR]".into()),
        (sum.clone(), "[K3S-SHA256]".into()),
    ];
    // The sha256 may also be shown shortened.
    for len in (8..64).rev() {
        replacements.push((sum[..len].to_string(), "[K3S-SHA256-PREFIX]".into()));
    }
    for (from, to) in &replacements {
        json = json.replace(from.as_str(), to);
    }
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        plan.as_array()
            .unwrap()
            .iter()
            .all(|e| e["pending"] == true),
        "a fresh server has every phase pending: {json}"
    );
    insta::assert_snapshot!("rebuild_plan_json_fresh", json);
}
