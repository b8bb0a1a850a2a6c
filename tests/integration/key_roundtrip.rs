//! `rebox key export | verify | show` round trips for every recipient kind, the file
//! rules (0600, two files for passphrase + keys, paper page), and the output formats.

use crate::key_support;
use std::os::unix::fs::PermissionsExt;

use key_support::*;
use predicates::prelude::*;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// verify prints the fingerprint, show --reveal prints exactly the shares.
fn assert_verify_and_show(s: &Scratch, file: &std::path::Path, id: &std::path::Path) {
    let fp = sha256_hex(SHARE1);
    s.rebox()
        .args(["key", "verify", "-i"])
        .arg(id)
        .arg(file)
        .assert()
        .success()
        .stdout(predicate::str::contains(&fp))
        .stdout(predicate::str::contains("cluster         lab"))
        .stdout(predicate::str::contains(SHARE1).not());
    s.rebox()
        .args(["key", "show", "--reveal", "-i"])
        .arg(id)
        .arg(file)
        .assert()
        .success()
        .stdout(format!("{SHARE1}\n"));
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[test]
fn key_round_trip_x25519_armored() {
    let s = Scratch::new();
    let (file, id) = export_x25519(&s, "vk.age", &[]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
        "{text}"
    );
    assert_eq!(mode(&file), 0o600);
    assert_verify_and_show(&s, &file, &id);
}

#[test]
fn key_round_trip_x25519_binary() {
    let s = Scratch::new();
    let (file, id) = export_x25519(&s, "vk.age", &["--binary"]);
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    assert_eq!(mode(&file), 0o600);
    assert_verify_and_show(&s, &file, &id);
}

#[test]
fn key_round_trip_ssh_ed25519_recipient_line() {
    let s = Scratch::new();
    let (private, public) = s.ssh_key("id_ed25519", "ed25519");
    let line = std::fs::read_to_string(&public).unwrap();
    let file = s.path("vk.age");
    s.rebox()
        .args(["key", "export", "--from-stdin", "--cluster", "lab", "-r"])
        .arg(line.trim())
        .arg("-i")
        .arg(&private)
        .arg("-o")
        .arg(&file)
        .write_stdin(format!("{SHARE1}\n"))
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "decrypted and every fingerprint checked",
        ));
    assert_eq!(mode(&file), 0o600);
    assert_verify_and_show(&s, &file, &private);
}

#[test]
fn key_round_trip_ssh_rsa_recipients_file() {
    let s = Scratch::new();
    let (private, public) = s.ssh_key("id_rsa", "rsa");
    let file = s.path("vk.age");
    s.rebox()
        .args(["key", "export", "--from-stdin", "--cluster", "lab", "-R"])
        .arg(&public)
        .arg("-i")
        .arg(&private)
        .arg("-o")
        .arg(&file)
        .write_stdin(format!("{SHARE1}\n"))
        .assert()
        .success();
    assert_verify_and_show(&s, &file, &private);
}

#[test]
fn key_round_trip_passphrase_on_terminal() {
    let s = Scratch::new();
    let mut cmd = s.rebox_std();
    cmd.args([
        "key",
        "export",
        "--from-stdin",
        "--cluster",
        "lab",
        "-p",
        "--binary",
        "-o",
        "vk.age",
    ]);
    let out = run_pty(
        cmd,
        Some(&format!("{SHARE1}\n")),
        false,
        &[("Passphrase for", PASS), ("Same passphrase again", PASS)],
    );
    assert!(out.status.success(), "{}", out.all());
    assert!(
        !out.all().contains(PASS),
        "passphrase echoed: {}",
        out.all()
    );
    assert!(!out.stderr.contains("weak"), "{}", out.stderr);
    let file = s.path("vk.age");
    assert_eq!(mode(&file), 0o600);
    // The scrypt work factor is fixed at 18 whatever this machine's speed.
    let bytes = std::fs::read(&file).unwrap();
    let header = String::from_utf8_lossy(&bytes[..100]).into_owned();
    assert!(
        header.contains("\n-> scrypt ") && header.contains(" 18\n"),
        "{header}"
    );

    let mut cmd = s.rebox_std();
    cmd.args(["key", "verify", "vk.age"]);
    let out = run_pty(cmd, None, false, &[("Passphrase for vk.age", PASS)]);
    assert!(out.status.success(), "{}", out.all());
    assert!(out.stdout.contains(&sha256_hex(SHARE1)), "{}", out.stdout);
    assert!(out.stdout.contains("passphrase"), "{}", out.stdout);

    let mut cmd = s.rebox_std();
    cmd.args(["key", "show", "--reveal", "vk.age"]);
    let out = run_pty(cmd, Some(""), false, &[("Passphrase for vk.age", PASS)]);
    assert!(out.status.success(), "{}", out.all());
    assert_eq!(out.stdout, format!("{SHARE1}\n"));
}

#[test]
fn key_passphrase_empty_refused_mismatch_retried_weak_warned() {
    let s = Scratch::new();
    let mut cmd = s.rebox_std();
    cmd.args([
        "key",
        "export",
        "--from-stdin",
        "--cluster",
        "lab",
        "-p",
        "-o",
        "vk.age",
    ]);
    let out = run_pty(
        cmd,
        Some(&format!("{SHARE1}\n")),
        false,
        &[
            ("Passphrase for", ""),
            ("Passphrase for", "hunter2"),
            ("Same passphrase again", "hunter3"),
            ("Passphrase for", "hunter2"),
            ("Same passphrase again", "hunter2"),
        ],
    );
    assert!(out.status.success(), "{}", out.all());
    assert!(
        out.tty.contains("An empty passphrase is refused"),
        "{}",
        out.tty
    );
    assert!(
        out.tty.contains("The two passphrases differ"),
        "{}",
        out.tty
    );
    assert!(
        out.stderr.contains("warning: this passphrase is weak"),
        "{}",
        out.stderr
    );
    assert!(
        !out.all().contains("hunter"),
        "passphrase echoed: {}",
        out.all()
    );
    assert_eq!(s.files(), ["vk.age"]);
}

#[test]
fn key_passphrase_always_empty_gives_up_and_writes_nothing() {
    let s = Scratch::new();
    let mut cmd = s.rebox_std();
    cmd.args([
        "key",
        "export",
        "--from-stdin",
        "--cluster",
        "lab",
        "-p",
        "-o",
        "vk.age",
    ]);
    let out = run_pty(
        cmd,
        Some(&format!("{SHARE1}\n")),
        false,
        &[
            ("Passphrase for", ""),
            ("Passphrase for", ""),
            ("Passphrase for", ""),
        ],
    );
    assert!(!out.status.success(), "{}", out.all());
    assert!(
        out.stderr.contains("no usable passphrase"),
        "{}",
        out.stderr
    );
    assert!(s.files().is_empty(), "{:?}", s.files());
}

#[test]
fn key_passphrase_without_terminal_is_refused_and_nothing_written() {
    let s = Scratch::new();
    let mut cmd = s.rebox_std();
    cmd.args([
        "key",
        "export",
        "--from-stdin",
        "--cluster",
        "lab",
        "-p",
        "-o",
        "vk.age",
    ]);
    let out = run_without_tty(cmd, &format!("{SHARE1}\n"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs a terminal"), "{stderr}");
    assert!(s.files().is_empty(), "{:?}", s.files());
}

#[test]
fn key_passphrase_and_keys_write_two_verified_files() {
    let s = Scratch::new();
    let (id, recipient) = s.age_identity("me.key");
    let mut cmd = s.rebox_std();
    cmd.args([
        "key",
        "export",
        "--from-stdin",
        "--cluster",
        "lab",
        "-p",
        "-r",
    ])
    .arg(&recipient)
    .arg("-i")
    .arg(&id)
    .args(["-o", "vault-key.age"]);
    let out = run_pty(
        cmd,
        Some(&format!("{SHARE1}\n")),
        false,
        &[("Passphrase for", PASS), ("Same passphrase again", PASS)],
    );
    assert!(out.status.success(), "{}", out.all());
    assert_eq!(
        s.files(),
        ["me.key", "vault-key.keys.age", "vault-key.pass.age"]
    );
    assert_eq!(
        out.stderr
            .matches("decrypted and every fingerprint checked")
            .count(),
        2,
        "{}",
        out.stderr
    );
    assert_eq!(mode(&s.path("vault-key.pass.age")), 0o600);
    assert_eq!(mode(&s.path("vault-key.keys.age")), 0o600);
    assert_verify_and_show(&s, &s.path("vault-key.keys.age"), &id);
}

#[test]
fn key_export_without_identity_checks_header_only_and_says_so() {
    let s = Scratch::new();
    let (_, recipient) = s.age_identity("me.key");
    s.rebox()
        .args(["key", "export", "--from-stdin", "--cluster", "lab", "-r"])
        .arg(&recipient)
        .args(["-o", "vk.age"])
        .write_stdin(format!("{SHARE1}\n"))
        .assert()
        .success()
        .stderr(predicate::str::contains("not decrypted (pass -i"));
}

#[test]
fn key_paper_page_has_armor_fingerprints_date_and_age_command() {
    let s = Scratch::new();
    let (file, id) = export_x25519(&s, "vk.age", &["--binary", "--paper"]);
    let paper_path = s.path("vk.age.paper.txt");
    assert_eq!(mode(&paper_path), 0o600);
    let paper = std::fs::read_to_string(&paper_path).unwrap();
    assert!(paper.contains(&sha256_hex(SHARE1)), "{paper}");
    assert!(
        paper.contains(&format!("age -d -i {} vk.age", id.display())),
        "{paper}"
    );
    assert!(paper.contains("Created:    20"), "{paper}");
    assert!(!paper.contains(SHARE1));
    // The armored text on the page is the same ciphertext: the stock age tool decrypts it.
    let begin = paper.find("-----BEGIN AGE ENCRYPTED FILE-----").unwrap();
    let typed = s.path("typed.age");
    std::fs::write(&typed, &paper[begin..]).unwrap();
    let out = std::process::Command::new(age_tool("age"))
        .arg("-d")
        .arg("-i")
        .arg(&id)
        .arg(&typed)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(SHARE1));
    assert_verify_and_show(&s, &file, &id);
}

#[test]
fn key_shares_threshold_and_extra_secrets_are_kept() {
    let s = Scratch::new();
    let (id, recipient) = s.age_identity("me.key");
    std::fs::write(s.path("cf.txt"), "cf-token-secret-value\n").unwrap();
    s.rebox()
        .args(["key", "export", "--from-stdin", "--cluster", "lab", "-r"])
        .arg(&recipient)
        .arg("-i")
        .arg(&id)
        .args(["--threshold", "2", "--share-count", "5"])
        .args(["--extra-from-file", "cloudflare_api_token=cf.txt"])
        .args(["--extra-from-env", "git_token=REBOX_TEST_GIT_TOKEN"])
        .env("REBOX_TEST_GIT_TOKEN", "git-token-secret-value")
        .args(["-o", "vk.age"])
        .write_stdin(format!("Unseal Key 1: {SHARE1}\nUnseal Key 2: {SHARE2}\n"))
        .assert()
        .success();
    let out = s
        .rebox()
        .args(["--json", "key", "verify", "-i", "me.key", "vk.age"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["cluster"], "lab");
    assert_eq!(v["threshold"], 2);
    assert_eq!(v["share_count"], 5);
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["protected_by"], "keys");
    assert_eq!(v["shares"][1]["sha256"], sha256_hex(SHARE2));
    let extra = |name: &str| {
        v["extra"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no extra {name}: {v}"))["sha256"]
            .clone()
    };
    assert_eq!(
        extra("cloudflare_api_token"),
        sha256_hex("cf-token-secret-value")
    );
    assert_eq!(extra("git_token"), sha256_hex("git-token-secret-value"));
    assert!(v["created_by"].as_str().unwrap().starts_with("rebox "));
    let text = String::from_utf8(out).unwrap();
    for secret in [
        SHARE1,
        SHARE2,
        "cf-token-secret-value",
        "git-token-secret-value",
    ] {
        assert!(!text.contains(secret));
    }
    s.rebox()
        .args(["key", "show", "--reveal", "-i", "me.key", "vk.age"])
        .assert()
        .success()
        .stdout(format!("{SHARE1}\n{SHARE2}\n"));
    s.rebox()
        .args([
            "key",
            "show",
            "--reveal",
            "--extra",
            "git_token",
            "-i",
            "me.key",
            "vk.age",
        ])
        .assert()
        .success()
        .stdout("git-token-secret-value\n");
}

#[test]
fn key_show_without_reveal_refuses_and_prints_nothing() {
    let s = Scratch::new();
    let (file, id) = export_x25519(&s, "vk.age", &[]);
    s.rebox()
        .args(["key", "show", "-i"])
        .arg(&id)
        .arg(&file)
        .assert()
        .failure()
        .stdout("")
        .stderr(predicate::str::contains("--reveal"))
        .stderr(predicate::str::contains("rebox key verify"));
}

#[test]
fn key_show_warns_when_stdout_is_a_terminal() {
    let s = Scratch::new();
    let (file, id) = export_x25519(&s, "vk.age", &[]);
    let mut cmd = s.rebox_std();
    cmd.args(["key", "show", "--reveal", "-i"])
        .arg(&id)
        .arg(&file);
    let out = run_pty(cmd, Some(""), true, &[]);
    assert!(out.status.success(), "{}", out.all());
    assert!(
        out.stderr
            .contains("warning: printing a secret to the terminal"),
        "{}",
        out.stderr
    );
    assert!(out.tty.contains(SHARE1));
}

#[test]
fn key_shares_pasted_on_the_terminal_are_not_echoed() {
    let s = Scratch::new();
    let (id, recipient) = s.age_identity("me.key");
    let mut cmd = s.rebox_std();
    cmd.args(["key", "export", "--from-stdin", "--cluster", "lab", "-r"])
        .arg(&recipient)
        .args(["-i", "me.key", "-o", "vk.age"]);
    // stdin is the terminal itself: the operator pastes the shares.
    let out = run_pty(
        cmd,
        None,
        false,
        &[
            ("Share 1: ", SHARE1),
            ("Share 2 ", SHARE2),
            ("Share 3 ", ""),
        ],
    );
    assert!(out.status.success(), "{}", out.all());
    assert!(
        !out.tty.contains(SHARE1) && !out.tty.contains(SHARE2),
        "echoed: {}",
        out.tty
    );
    s.rebox()
        .args(["key", "show", "--reveal", "-i"])
        .arg(&id)
        .arg("vk.age")
        .assert()
        .success()
        .stdout(format!("{SHARE1}\n{SHARE2}\n"));
}

#[test]
fn key_export_without_from_stdin_reads_the_cluster_and_needs_a_server() {
    // The cluster is the default source: with no server there is nothing to read from.
    let s = Scratch::new();
    let (_, recipient) = s.age_identity("me.key");
    s.rebox()
        .args(["key", "export", "-r"])
        .arg(&recipient)
        .args(["-o", "vk.age"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("no server given").and(predicate::str::contains("--host")),
        );
    assert_eq!(s.files(), ["me.key"]);
    // An unreachable server: a connection error naming it, and nothing written.
    s.rebox()
        .args(["key", "export", "-r"])
        .arg(&recipient)
        .args([
            "-o",
            "vk.age",
            "--host",
            "127.0.0.1",
            "--port",
            "1",
            "--known-hosts",
            "kh",
        ])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("Secret security/vault-unseal-key on 127.0.0.1:1")
                .and(predicate::str::contains("nothing was written")),
        );
    assert_eq!(s.files(), ["me.key"]);
}

#[test]
fn key_verify_against_cluster_needs_a_reachable_server() {
    let s = Scratch::new();
    let (file, id) = export_x25519(&s, "vk.age", &[]);
    s.rebox()
        .args(["key", "verify", "--against-cluster", "-i"])
        .arg(&id)
        .arg(&file)
        .args(["--host", "127.0.0.1", "--port", "1", "--known-hosts", "kh"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("itself is valid, but it could not be compared")
                .and(predicate::str::contains("cannot reach 127.0.0.1:1")),
        );
}

#[test]
fn key_force_replaces_and_cluster_name_comes_from_config() {
    let s = Scratch::new();
    std::fs::write(s.path("rebox.toml"), "cluster_name = \"from-config\"\n").unwrap();
    let (id, recipient) = s.age_identity("me.key");
    std::fs::write(s.path("vk.age"), "old backup").unwrap();
    s.rebox()
        .args(["key", "export", "--from-stdin", "--force", "-r"])
        .arg(&recipient)
        .args(["-o", "vk.age"])
        .write_stdin(SHARE1)
        .assert()
        .success();
    assert_eq!(mode(&s.path("vk.age")), 0o600);
    s.rebox()
        .args(["key", "verify", "-i"])
        .arg(&id)
        .arg("vk.age")
        .assert()
        .success()
        .stdout(predicate::str::contains("cluster         from-config"));
}
