//! Resume at every phase boundary: `rebox rebuild` is stopped (the runner's failpoint,
//! `REBOX_FAILPOINT_EXIT_AFTER`, exit status 86) right after each phase in turn is recorded;
//! each rerun resumes from the journal, a last run completes, and Vault was initialised exactly
//! once (the offline backup from the `vault-init` boundary is the one that unseals it).

use crate::common;
use common::describe;
use std::process::Command;
use std::time::Instant;

use common::{lab_bundle, Lab};
use rebox_lab::server::LabOptions;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The offline backup, decrypted by the stock age CLI: (created_at, the unseal share).
fn backup_contents(lab: &Lab) -> (String, String) {
    let (id, _) = lab.age_identity();
    let plain = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&id)
        .arg(lab.backup_path())
        .output()
        .unwrap();
    assert!(
        plain.status.success(),
        "age -d failed: {}",
        text(&plain.stderr)
    );
    let doc = String::from_utf8(plain.stdout).unwrap();
    let field = |name: &str| {
        doc.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("{name} = \""))
                    .and_then(|r| r.strip_suffix('"'))
            })
            .unwrap_or_else(|| panic!("no {name} in the backup"))
            .to_string()
    };
    (field("created_at"), field("key"))
}

#[test]
fn rebuild_resumes_after_a_kill_at_every_phase_boundary() {
    let started = Instant::now();
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());

    // The phase ids, in order, from the plan.
    let out = lab
        .rebox_with_keys(&["--json", "plan"], &bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "plan: {}", describe(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<String> = plan
        .as_array()
        .expect("the plan is a list")
        .iter()
        .map(|e| e["id"].as_str().expect("an id").to_string())
        .collect();
    assert!(ids.iter().any(|i| i == "vault-init"), "{ids:?}");

    let mut backup_at_init: Option<(String, String)> = None;
    for (n, id) in ids.iter().enumerate() {
        let out = lab
            .rebox_with_keys(&["--yes", "rebuild"], &bundle)
            .env("REBOX_FAILPOINT_EXIT_AFTER", id)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(86),
            "the failpoint after `{id}` did not stop rebox: {}",
            describe(&out)
        );
        let stderr = text(&out.stderr);
        if n > 0 {
            assert!(
                stderr.contains("resuming rebuild"),
                "the run stopped after `{id}` did not resume: {}",
                describe(&out)
            );
        }
        if id == "vault-init" {
            backup_at_init = Some(backup_contents(&lab));
        }
    }
    let (created_at, share) = backup_at_init.expect("a vault-init boundary");

    // Without the failpoint the rebuild completes (everything already done).
    let out = lab
        .rebox_with_keys(&["--yes", "rebuild"], &bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the final run failed: {}",
        describe(&out)
    );
    assert!(
        text(&out.stderr).contains("resuming rebuild"),
        "{}",
        describe(&out)
    );
    assert!(
        text(&out.stdout).contains("Rebuild finished"),
        "{}",
        describe(&out)
    );

    // Vault was initialised exactly once: the backup is still the one written at `vault-init`,
    // its share is the one in the Secret, and it unsealed Vault.
    let (created_now, share_now) = backup_contents(&lab);
    assert_eq!(created_now, created_at, "the offline backup was rewritten");
    assert_eq!(share_now, share, "the offline backup holds another key");
    let in_secret =
        lab.kubectl("-n security get secret vault-unseal-key -o jsonpath='{.data.key}'");
    use base64::Engine;
    let in_secret = base64::engine::general_purpose::STANDARD
        .decode(in_secret.trim())
        .unwrap();
    assert_eq!(
        String::from_utf8(in_secret).unwrap().trim(),
        share,
        "the Secret and the backup hold different keys"
    );
    let ready = lab.kubectl("-n security get pod vault-0 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'",
    );
    assert_eq!(ready.trim(), "True", "Vault is not unsealed");
    eprintln!(
        "{} boundaries in {:.1}s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
}
