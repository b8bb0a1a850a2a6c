//! `rebox unseal` against a lab server whose Vault has a key of three shares (two to
//! unseal): from the cluster's Secret and from the offline backup, with progress share by
//! share, and never a share in the output at -vvv (nor in `doctor --fix`'s).

use crate::{common, doctor_support};
use std::process::Output;

use common::{lab_bundle, Lab};
use doctor_support::*;
use rebox_lab::server::LabOptions;

/// A healthy lab whose Vault was initialised with 3 shares, threshold 2.
fn multi_share_lab() -> Lab {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let config = lab.dir.path().join("rebox.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[vault]\nkey_shares = 3\nkey_threshold = 2\n");
    std::fs::write(&config, text).unwrap();
    let bundle = lab_bundle(lab.dir.path());
    let out = lab
        .rebox_with_keys(&["--yes", "rebuild"], &bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "rebuild: {}", text_of(&out));
    lab
}

fn text_of(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

/// `rebox -vvv unseal …` with the lab's SSH flags (`-i` is the age identity here).
fn unseal(lab: &Lab, extra: &[&str]) -> Output {
    lab.rebox()
        .args(["-vvv", "unseal"])
        .arg("--ssh-identity")
        .arg(lab.server.client_key())
        .arg("--known-hosts")
        .arg(lab.known_hosts())
        .args(extra)
        .output()
        .unwrap()
}

/// The shares in the cluster's Secret (read here only to prove they are never printed).
fn shares(lab: &Lab) -> Vec<String> {
    use base64::Engine;
    let b64 = kubectl(
        lab,
        "-n security get secret vault-unseal-key -o jsonpath='{.data.key}'",
    );
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap();
    String::from_utf8(raw)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

fn assert_no_share(what: &str, output: &str, shares: &[String]) {
    for s in shares {
        assert!(
            !output.contains(s.as_str()),
            "{what} printed an unseal key share"
        );
        // Nor a recognisable piece of one.
        assert!(
            !output.contains(&s[..16]),
            "{what} printed part of an unseal key share"
        );
    }
}

fn vault_ready(lab: &Lab) -> String {
    kubectl(lab, "-n security get pod vault-0 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'")
        .trim()
        .to_string()
}

#[test]
fn doctor_unseal_from_the_secret_and_from_the_backup_shows_progress_and_never_the_key() {
    let lab = multi_share_lab();
    let shares = shares(&lab);
    assert_eq!(shares.len(), 3);

    // Already unsealed: nothing to do.
    let out = unseal(&lab, &[]);
    assert!(out.status.success(), "{}", text_of(&out));
    assert!(
        text(&out.stdout).contains("already unsealed"),
        "{}",
        text_of(&out)
    );

    // From the Secret.
    suspend(&lab, "vault-auto-unseal", true);
    seal(&lab);
    let out = unseal(&lab, &[]);
    let all = text_of(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("unseal progress 1/2") && all.contains("unseal progress 2/2: Vault unsealed"),
        "{all}"
    );
    assert!(
        text(&out.stdout).contains("key from Secret security/vault-unseal-key; vault-0 is Ready"),
        "{all}"
    );
    assert_eq!(vault_ready(&lab), "True");
    assert_no_share("rebox -vvv unseal (Secret)", &all, &shares);

    // From the offline backup, with the Secret gone (so it cannot be the source).
    kubectl(&lab, "-n security delete secret vault-unseal-key");
    seal(&lab);
    let out = unseal(&lab, &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--from"), "{}", text_of(&out));
    let (id, _) = lab.age_identity();
    let backup = lab.backup_path();
    let out = unseal(
        &lab,
        &[
            "--from",
            backup.to_str().unwrap(),
            "-i",
            id.to_str().unwrap(),
        ],
    );
    let all = text_of(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("unseal progress 1/2") && all.contains("unseal progress 2/2: Vault unsealed"),
        "{all}"
    );
    assert!(text(&out.stdout).contains("offline backup"), "{all}");
    assert_eq!(vault_ready(&lab), "True");
    assert_no_share("rebox -vvv unseal --from", &all, &shares);

    // doctor --fix at -vvv: recreates the Secret from the backup (the key proven by unsealing
    // a sealed Vault), never printing it either.
    seal(&lab);
    let out = lab
        .rebox()
        .args(["-vvv", "--json", "--yes", "doctor", "--fix"])
        .args(lab.conn_args())
        .args([
            "--from",
            backup.to_str().unwrap(),
            "--key-identity",
            id.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let all = text_of(&out);
    assert!(out.status.success(), "{all}");
    assert_no_share("rebox -vvv doctor --fix", &all, &shares);
    assert_eq!(vault_ready(&lab), "True");
    assert_eq!(shares_of_secret_count(&lab), 3);

    // status and status --watch read the Secret too (the watch receives it whole): at -vvv
    // neither prints it.
    for args in [
        &["-vvv", "status"][..],
        &["-vvv", "status", "--watch", "--timeout", "60"][..],
    ] {
        let out = lab
            .rebox()
            .args(args)
            .args(lab.conn_args())
            .output()
            .unwrap();
        let all = text_of(&out);
        assert!(out.status.success(), "{args:?}: {all}");
        assert_no_share(&format!("rebox {args:?}"), &all, &shares);
    }
}

fn shares_of_secret_count(lab: &Lab) -> usize {
    shares(lab).len()
}

#[test]
fn doctor_unseal_refuses_a_backup_the_identity_cannot_open_before_connecting() {
    // No server at all: the backup is opened first, so its error is the one reported.
    let dir = tempfile::tempdir().unwrap();
    let keygen = |name: &str| {
        let id = dir.path().join(name);
        let out = std::process::Command::new("age-keygen")
            .arg("-o")
            .arg(&id)
            .output()
            .unwrap();
        assert!(out.status.success());
        let public = std::process::Command::new("age-keygen")
            .arg("-y")
            .arg(&id)
            .output()
            .unwrap();
        (
            id,
            String::from_utf8(public.stdout).unwrap().trim().to_string(),
        )
    };
    let (_, operator) = keygen("operator.age");
    let (stranger, _) = keygen("stranger.age");
    let doc = dir.path().join("doc.txt");
    std::fs::write(&doc, "[unseal]\n").unwrap();
    let backup = dir.path().join("vault-key.age");
    let out = std::process::Command::new("age")
        .args(["-a", "-r", &operator, "-o"])
        .arg(&backup)
        .arg(&doc)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(
        dir.path().join("rebox.toml"),
        "[server]\nhost = \"127.0.0.1\"\nport = 1\n",
    )
    .unwrap();
    let out = assert_cmd::Command::cargo_bin("rebox")
        .unwrap()
        .env("HOME", dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .arg("--config")
        .arg(dir.path().join("rebox.toml"))
        .args(["unseal", "--from"])
        .arg(&backup)
        .arg("-i")
        .arg(&stranger)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("vault-key.age"), "{err}");
    assert!(
        !err.contains("127.0.0.1"),
        "it tried the server before opening the backup: {err}"
    );
}
