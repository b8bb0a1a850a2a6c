//! Interop with the stock `age` CLI (Debian's age 1.1.1), both ways: what rebox writes
//! decrypts with `age -d`, and a backup document encrypted by `age` passes `rebox key verify`.
//! This is the promise to an operator who has only `age` and the file.

use crate::key_support;
use std::path::Path;
use std::process::Command;

use key_support::*;
use predicates::prelude::*;

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// A version-1 document written by hand from the documented format, as an operator (or a
/// future tool) could: proves the format is plain and self-describing.
fn hand_written_document() -> String {
    format!(
        "# written by hand\n\
         format = \"rebox-unseal-key-backup\"\n\
         version = 1\n\
         cluster = \"homelab\"\n\
         created_at = \"2025-03-04T05:06:07Z\"\n\
         created_by = \"a human\"\n\
         \n\
         [unseal]\n\
         threshold = 1\n\
         share_count = 1\n\
         \n\
         [[unseal.shares]]\n\
         index = 1\n\
         key = \"{SHARE1}\"\n\
         sha256 = \"{}\"\n",
        sha256_hex(SHARE1)
    )
}

/// `age -d` output of a rebox file: the TOML document holding the share.
fn age_decrypt(identity: &Path, file: &Path) -> String {
    let out = Command::new(age_tool("age"))
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn assert_is_document(text: &str) {
    assert!(
        text.contains("format = \"rebox-unseal-key-backup\""),
        "{text}"
    );
    assert!(text.contains(&format!("key = \"{SHARE1}\"")), "{text}");
    assert!(text.contains(&sha256_hex(SHARE1)), "{text}");
}

#[test]
fn key_interop_age_cli_decrypts_rebox_x25519_armored_and_binary() {
    for extra in [&[][..], &["--binary"][..]] {
        let s = Scratch::new();
        let (file, id) = export_x25519(&s, "vk.age", extra);
        assert_is_document(&age_decrypt(&id, &file));
    }
}

#[test]
fn key_interop_age_cli_decrypts_rebox_ssh_ed25519_and_rsa() {
    for kind in ["ed25519", "rsa"] {
        let s = Scratch::new();
        let (private, public) = s.ssh_key("id", kind);
        let file = s.path("vk.age");
        s.rebox()
            .args(["key", "export", "--from-stdin", "--cluster", "lab", "-R"])
            .arg(&public)
            .arg("-o")
            .arg(&file)
            .write_stdin(SHARE1)
            .assert()
            .success();
        assert_is_document(&age_decrypt(&private, &file));
    }
}

#[test]
fn key_interop_age_cli_decrypts_rebox_passphrase_file() {
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
        Some(SHARE1),
        false,
        &[("Passphrase for", PASS), ("Same passphrase again", PASS)],
    );
    assert!(out.status.success(), "{}", out.all());
    // The age CLI reads passphrases only from a terminal.
    let mut age = Command::new(age_tool("age"));
    age.current_dir(s.dir.path()).args(["-d", "vk.age"]);
    let out = run_pty(age, Some(""), false, &[("passphrase", PASS)]);
    assert!(out.status.success(), "age -d: {}", out.all());
    assert_is_document(&out.stdout);
}

/// Encrypts `plaintext` with the age CLI; `args` choose recipients and armor.
fn age_encrypt(dir: &Path, plaintext: &str, args: &[&str], out: &str) {
    std::fs::write(dir.join("plain.toml"), plaintext).unwrap();
    let res = Command::new(age_tool("age"))
        .current_dir(dir)
        .args(args)
        .args(["-o", out, "plain.toml"])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "age -e: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    std::fs::remove_file(dir.join("plain.toml")).unwrap();
}

#[test]
fn key_interop_rebox_verifies_document_encrypted_by_age_x25519() {
    let s = Scratch::new();
    let (id, recipient) = s.age_identity("me.key");
    for (armor, name) in [(true, "a.age"), (false, "b.age")] {
        let mut args = vec!["-r", recipient.as_str()];
        if armor {
            args.push("-a");
        }
        age_encrypt(s.dir.path(), &hand_written_document(), &args, name);
        s.rebox()
            .args(["key", "verify", "-i"])
            .arg(&id)
            .arg(name)
            .assert()
            .success()
            .stdout(predicate::str::contains("a valid rebox unseal-key backup"))
            .stdout(predicate::str::contains(sha256_hex(SHARE1)))
            .stdout(predicate::str::contains("homelab"))
            .stdout(predicate::str::contains(SHARE1).not());
        s.rebox()
            .args(["key", "show", "--reveal", "-i"])
            .arg(&id)
            .arg(name)
            .assert()
            .success()
            .stdout(format!("{SHARE1}\n"));
    }
}

#[test]
fn key_interop_rebox_verifies_document_encrypted_by_age_ssh() {
    let s = Scratch::new();
    let (private, public) = s.ssh_key("id_ed25519", "ed25519");
    let public = public.to_string_lossy().into_owned();
    age_encrypt(
        s.dir.path(),
        &hand_written_document(),
        &["-a", "-R", &public],
        "vk.age",
    );
    s.rebox()
        .args(["key", "verify", "-i"])
        .arg(&private)
        .arg("vk.age")
        .assert()
        .success()
        .stdout(predicate::str::contains(sha256_hex(SHARE1)));
}

#[test]
fn key_interop_rebox_verifies_document_encrypted_by_age_passphrase() {
    let s = Scratch::new();
    std::fs::write(s.path("plain.toml"), hand_written_document()).unwrap();
    let mut age = Command::new(age_tool("age"));
    age.current_dir(s.dir.path())
        .args(["-p", "-a", "-o", "vk.age", "plain.toml"]);
    let out = run_pty(
        age,
        Some(""),
        false,
        &[("passphrase", PASS), ("Confirm passphrase", PASS)],
    );
    assert!(out.status.success(), "age -p: {}", out.all());
    let mut cmd = s.rebox_std();
    cmd.args(["key", "verify", "vk.age"]);
    let out = run_pty(cmd, None, false, &[("Passphrase for vk.age", PASS)]);
    assert!(out.status.success(), "{}", out.all());
    assert!(out.stdout.contains(&sha256_hex(SHARE1)), "{}", out.stdout);
}
