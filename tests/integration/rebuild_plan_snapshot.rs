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

/// Each phase's step lines in `plan --json`, by phase id.
fn steps_by_phase(entries: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    entries
        .as_array()
        .expect("a list of phases")
        .iter()
        .map(|e| {
            let steps = e["steps"]
                .as_array()
                .expect("steps")
                .iter()
                .map(|s| s.as_str().expect("a step line").to_string())
                .collect();
            (e["id"].as_str().expect("an id").to_string(), steps)
        })
        .collect()
}

/// Whether `done` is `planned` with some lines left out, in the same order: a run may skip a
/// conditional step ("if it stays degraded: …"), never do one the plan did not show.
fn is_subsequence(done: &[String], planned: &[String]) -> bool {
    let mut planned = planned.iter();
    done.iter().all(|d| planned.any(|p| p == d))
}

/// The plan and the run are one code path (each phase's `apply`, planned with no action run):
/// every step a fresh rebuild does is a line the plan showed, in the plan's order, and every
/// phase that ran did at least one of them.
#[test]
fn rebuild_does_what_its_plan_said() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    let out = lab
        .rebox_with_keys(&["--json", "plan"], &bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let planned = steps_by_phase(&serde_json::from_slice(&out.stdout).unwrap());

    let out = lab
        .rebox_with_keys(&["--json", "--yes", "rebuild"], &bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ran = steps_by_phase(&report["phases"]);
    assert_eq!(
        ran.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        planned.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "the run's phases are not the plan's"
    );
    let outcomes = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["outcome"]);
    for (((id, done), (_, plan)), outcome) in ran.iter().zip(&planned).zip(outcomes) {
        if outcome == "ran" {
            assert!(!done.is_empty(), "phase {id} ran and did no step: {report}");
        }
        assert!(
            is_subsequence(done, plan),
            "phase {id} did what its plan did not say:\n  did:     {done:?}\n  planned: {plan:?}"
        );
    }
}
