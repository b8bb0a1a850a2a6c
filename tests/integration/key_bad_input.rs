//! Every bad input the issue lists gives a clear error, a non-zero exit, nothing on stdout
//! and nothing written: wrong passphrase, wrong identity, truncated file, a flipped byte
//! (armored and binary), not age at all, age holding something else, an unsupported format
//! version, no recipients, an existing output, an unwritable output directory.

use crate::key_support;
use std::path::Path;
use std::process::Command;

use key_support::*;
use predicates::prelude::*;

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// `rebox key verify -i ID FILE` must fail with `msg` in stderr and print nothing on stdout.
fn verify_fails(s: &Scratch, id: &Path, file: &Path, msg: &str) {
    let out = s
        .rebox()
        .args(["key", "verify", "-i"])
        .arg(id)
        .arg(file)
        .assert()
        .failure()
        .stdout("")
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(msg), "expected {msg:?} in: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains(SHARE1), "{stderr}");
    // show fails the same way and prints nothing either.
    s.rebox()
        .args(["key", "show", "--reveal", "-i"])
        .arg(id)
        .arg(file)
        .assert()
        .failure()
        .stdout("");
}

/// Encrypts `text` to `recipient` with the stock age CLI.
fn age_encrypt_to(s: &Scratch, recipient: &str, text: &str, out: &str) -> std::path::PathBuf {
    std::fs::write(s.path("plain.txt"), text).unwrap();
    let res = Command::new(age_tool("age"))
        .current_dir(s.dir.path())
        .args(["-a", "-r", recipient, "-o", out, "plain.txt"])
        .output()
        .unwrap();
    assert!(res.status.success());
    std::fs::remove_file(s.path("plain.txt")).unwrap();
    s.path(out)
}

fn document(version: u32, sha: &str) -> String {
    format!(
        "format = \"rebox-unseal-key-backup\"\nversion = {version}\ncluster = \"lab\"\n\
         created_at = \"2025-01-01T00:00:00Z\"\ncreated_by = \"test\"\n\
         [unseal]\nthreshold = 1\nshare_count = 1\n\
         [[unseal.shares]]\nindex = 1\nkey = \"{SHARE1}\"\nsha256 = \"{sha}\"\n"
    )
}

#[test]
fn key_bad_wrong_passphrase() {
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
    for sub in ["verify", "show"] {
        let mut cmd = s.rebox_std();
        cmd.args(["key", sub, "--reveal", "vk.age"]);
        if sub == "verify" {
            cmd = s.rebox_std();
            cmd.args(["key", "verify", "vk.age"]);
        }
        let out = run_pty(
            cmd,
            Some(""),
            false,
            &[("Passphrase for vk.age", "not-the-right-passphrase")],
        );
        assert!(!out.status.success());
        assert!(
            out.stderr.contains("wrong passphrase for vk.age"),
            "{}",
            out.stderr
        );
        assert_eq!(out.stdout, "");
    }
}

#[test]
fn key_bad_wrong_identity() {
    let s = Scratch::new();
    let (file, _) = export_x25519(&s, "vk.age", &[]);
    let (other, _) = s.age_identity("other.key");
    verify_fails(
        &s,
        &other,
        &file,
        "none of the identities given with -i can decrypt",
    );
    let (ssh, _) = s.ssh_key("id_ed25519", "ed25519");
    verify_fails(
        &s,
        &ssh,
        &file,
        "none of the identities given with -i can decrypt",
    );
}

#[test]
fn key_bad_missing_identity_says_to_pass_one() {
    let s = Scratch::new();
    let (file, _) = export_x25519(&s, "vk.age", &[]);
    s.rebox()
        .args(["key", "verify"])
        .arg(&file)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "pass the matching private key with -i",
        ));
}

#[test]
fn key_bad_truncated_file_armored_and_binary() {
    for extra in [&[][..], &["--binary"][..]] {
        let s = Scratch::new();
        let (file, id) = export_x25519(&s, "vk.age", extra);
        let bytes = std::fs::read(&file).unwrap();
        for keep in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 20] {
            let cut = s.path("cut.age");
            std::fs::write(&cut, &bytes[..keep]).unwrap();
            verify_fails(&s, &id, &cut, "is damaged");
        }
    }
}

#[test]
fn key_bad_flipped_byte_armored_and_binary() {
    for extra in [&[][..], &["--binary"][..]] {
        let s = Scratch::new();
        let (file, id) = export_x25519(&s, "vk.age", extra);
        let bytes = std::fs::read(&file).unwrap();
        // Binary: every byte. Armored: 60 positions spread over header, stanzas, MAC,
        // payload and the armor lines.
        let positions: Vec<usize> = if extra.is_empty() {
            (0..60).map(|i| i * (bytes.len() - 1) / 59).collect()
        } else {
            (0..bytes.len()).collect()
        };
        for pos in positions {
            let mut bad = bytes.clone();
            // In armor, swap for another base64 letter so the change is not merely a
            // character the armor parser rejects; elsewhere flip one bit.
            bad[pos] = match bad[pos] {
                b'A' => b'B',
                b'a'..=b'y' | b'A'..=b'Y' => bad[pos] + 1,
                c => c ^ 0x01,
            };
            let f = s.path("flipped.age");
            std::fs::write(&f, &bad).unwrap();
            let out = s
                .rebox()
                .args(["key", "verify", "-i"])
                .arg(&id)
                .arg(&f)
                .assert()
                .failure()
                .stdout("")
                .get_output()
                .clone();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("damaged")
                    || stderr.contains("not an age-encrypted file")
                    || stderr.contains("none of the identities"),
                "byte {pos}: {stderr}"
            );
        }
    }
}

#[test]
fn key_bad_not_age_at_all() {
    let s = Scratch::new();
    let (id, _) = s.age_identity("me.key");
    for content in [&b"just some notes\n"[..], b"", b"\x00\x01\x02garbage"] {
        let f = s.path("notes.age");
        std::fs::write(&f, content).unwrap();
        verify_fails(&s, &id, &f, "is not an age-encrypted file");
    }
    verify_fails(&s, &id, &s.path("missing.age"), "cannot open backup file");
}

#[test]
fn key_bad_age_file_holding_something_else() {
    let s = Scratch::new();
    let (id, recipient) = s.age_identity("me.key");
    for text in ["hello world\n", "[server]\nhost = \"x\"\n"] {
        let f = age_encrypt_to(&s, &recipient, text, "other.age");
        verify_fails(
            &s,
            &id,
            &f,
            "it decrypts, but does not hold a rebox unseal-key backup",
        );
    }
}

#[test]
fn key_bad_unsupported_format_version() {
    let s = Scratch::new();
    let (id, recipient) = s.age_identity("me.key");
    let f = age_encrypt_to(&s, &recipient, &document(2, &sha256_hex(SHARE1)), "v2.age");
    verify_fails(&s, &id, &f, "format version 2");
}

#[test]
fn key_bad_fingerprint_mismatch_in_document() {
    let s = Scratch::new();
    let (id, recipient) = s.age_identity("me.key");
    let f = age_encrypt_to(&s, &recipient, &document(1, &sha256_hex("other")), "fp.age");
    verify_fails(
        &s,
        &id,
        &f,
        "does not match its recorded SHA-256 fingerprint",
    );
}

#[test]
fn key_bad_no_recipients() {
    let s = Scratch::new();
    s.rebox()
        .args(["key", "export", "--from-stdin", "-o", "vk.age"])
        .write_stdin(SHARE1)
        .assert()
        .failure()
        .stderr(predicate::str::contains("no recipients"))
        .stderr(predicate::str::contains("-r age1"));
    assert!(s.files().is_empty(), "{:?}", s.files());
}

#[test]
fn key_bad_output_path_exists() {
    let s = Scratch::new();
    let (_, recipient) = s.age_identity("me.key");
    std::fs::write(s.path("vk.age"), "previous backup").unwrap();
    std::fs::write(s.path("vk2.age.paper.txt"), "previous paper").unwrap();
    for (out, extra) in [("vk.age", None), ("vk2.age", Some("--paper"))] {
        let mut cmd = s.rebox();
        cmd.args(["key", "export", "--from-stdin", "-r", &recipient, "-o", out]);
        if let Some(e) = extra {
            cmd.arg(e);
        }
        cmd.write_stdin(SHARE1)
            .assert()
            .failure()
            .stderr(predicate::str::contains("already exists; pass --force"));
    }
    assert_eq!(
        std::fs::read_to_string(s.path("vk.age")).unwrap(),
        "previous backup"
    );
    assert_eq!(s.files(), ["me.key", "vk.age", "vk2.age.paper.txt"]);
}

#[test]
fn key_bad_output_directory_not_writable() {
    let s = Scratch::new();
    let (_, recipient) = s.age_identity("me.key");
    // Root ignores directory modes, so as root use a directory the kernel refuses.
    let ro = if rustix::process::geteuid().is_root() {
        std::path::PathBuf::from("/sys")
    } else {
        use std::os::unix::fs::PermissionsExt;
        let d = s.path("ro");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).unwrap();
        d
    };
    s.rebox()
        .args(["key", "export", "--from-stdin", "-r", &recipient, "-o"])
        .arg(ro.join("vk.age"))
        .write_stdin(SHARE1)
        .assert()
        .failure()
        .stderr(predicate::str::contains("cannot write in directory"));
    assert!(!ro.join("vk.age").exists());
    s.rebox()
        .args(["key", "export", "--from-stdin", "-r", &recipient, "-o"])
        .arg(s.path("no/such/dir/vk.age"))
        .write_stdin(SHARE1)
        .assert()
        .failure()
        .stderr(predicate::str::contains("does not exist"));
}

#[test]
fn key_bad_identity_not_matching_recipients_writes_nothing() {
    let s = Scratch::new();
    let (_, recipient) = s.age_identity("me.key");
    let (other, _) = s.age_identity("other.key");
    s.rebox()
        .args(["key", "export", "--from-stdin", "-r", &recipient, "-i"])
        .arg(&other)
        .args(["-o", "vk.age"])
        .write_stdin(SHARE1)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "do not match the -r/-R recipients",
        ));
    assert_eq!(s.files(), ["me.key", "other.key"]);
}

#[test]
fn key_bad_recipients_and_identities_are_named_clearly() {
    let s = Scratch::new();
    let (id, _) = s.age_identity("me.key");
    let (_, public) = s.ssh_key("id_ed25519", "ed25519");
    let private_text = std::fs::read_to_string(&id).unwrap();
    let private_line = private_text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-r".into(), "nonsense".into()], "not a recipient"),
        (
            vec!["-r".into(), "age1qqqq".into()],
            "not a valid age X25519 recipient",
        ),
        // A private key given as recipient: refused, and never echoed back.
        (
            vec!["-r".into(), private_line.into()],
            "a private key was given",
        ),
        (
            vec![
                "-r".into(),
                "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY=".into(),
            ],
            "cannot be used with age",
        ),
        (
            vec!["-R".into(), s.path("missing.pub").display().to_string()],
            "cannot read recipients file",
        ),
        (
            vec![
                "-r".into(),
                "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into(),
                "-i".into(),
                public.display().to_string(),
            ],
            "is an SSH public key; -i needs the private key",
        ),
    ];
    for (args, msg) in cases {
        let out = s
            .rebox()
            .args(["key", "export", "--from-stdin", "-o", "vk.age"])
            .args(&args)
            .write_stdin(SHARE1)
            .assert()
            .failure()
            .get_output()
            .clone();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(msg),
            "{args:?}: expected {msg:?} in {stderr}"
        );
        assert!(!stderr.contains("AGE-SECRET-KEY"), "{stderr}");
    }
    assert_eq!(s.files(), ["id_ed25519", "id_ed25519.pub", "me.key"]);
}

#[test]
fn key_bad_key_input_is_refused_without_echo() {
    let s = Scratch::new();
    let (_, recipient) = s.age_identity("me.key");
    for (input, msg) in [
        ("", "no unseal key on standard input"),
        ("\n\n", "no unseal key on standard input"),
        (
            "Initial Root Token: hvs.sekrit-root-token\n",
            "line 1 of the key input is not an unseal key share",
        ),
        (&format!("{SHARE1}\n{SHARE1}\n"), "repeats an earlier share"),
    ] {
        let out = s
            .rebox()
            .args([
                "key",
                "export",
                "--from-stdin",
                "-r",
                &recipient,
                "-o",
                "vk.age",
            ])
            .write_stdin(input)
            .assert()
            .failure()
            .get_output()
            .clone();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(msg), "{input:?}: {stderr}");
        assert!(
            !stderr.contains("hvs.sekrit") && !stderr.contains(SHARE1),
            "{stderr}"
        );
    }
    assert_eq!(s.files(), ["me.key"]);
}
