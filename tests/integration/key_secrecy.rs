//! At the most verbose log level (-vvv, trace for every crate) the key and the passphrase
//! appear nowhere in what any `rebox key` command prints (except `show --reveal`'s stdout,
//! which is its purpose), nor in the paper page or any leftover file.

use crate::key_support;
use std::process::Output;

use key_support::*;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_clean(what: &str, output: &str) {
    for secret in [SHARE1, SHARE2, PASS, "extra-secret-value-777"] {
        assert!(
            !output.contains(secret),
            "{what}: secret {secret:?} leaked:\n{output}"
        );
    }
}

#[test]
fn key_never_appears_in_output_at_vvv() {
    let s = Scratch::new();
    let (id, recipient) = s.age_identity("me.key");
    std::fs::write(s.path("extra.txt"), "extra-secret-value-777").unwrap();

    // Export with keys, a paper page and an extra secret.
    let out = s
        .rebox()
        .args([
            "-vvv",
            "key",
            "export",
            "--from-stdin",
            "--cluster",
            "lab",
            "--paper",
        ])
        .args(["-r", &recipient, "-i", "me.key", "-o", "vk.age"])
        .args(["--extra-from-file", "cf=extra.txt", "--share-count", "3"])
        .write_stdin(format!("{SHARE1}\n{SHARE2}\n"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
    // The logs really are at trace level, or this test would prove nothing.
    assert!(
        all.contains("TRACE") || all.contains("DEBUG"),
        "no verbose logs: {all}"
    );
    assert_clean("export", &all);
    assert_clean(
        "paper",
        &std::fs::read_to_string(s.path("vk.age.paper.txt")).unwrap(),
    );

    // verify (human and JSON), show without --reveal, and failures.
    for args in [
        vec!["-vvv", "key", "verify", "-i", "me.key", "vk.age"],
        vec!["-vvv", "--json", "key", "verify", "-i", "me.key", "vk.age"],
        vec!["-vvv", "key", "show", "-i", "me.key", "vk.age"],
        vec!["-vvv", "key", "verify", "vk.age"],
        vec!["-vvv", "key", "verify", "-i", "extra.txt", "vk.age"],
    ] {
        let out = s.rebox().args(&args).output().unwrap();
        assert_clean(&format!("{args:?}"), &text(&out));
    }
    let (other, _) = s.age_identity("other.key");
    let out = s
        .rebox()
        .args(["-vvv", "key", "verify", "-i"])
        .arg(&other)
        .arg("vk.age")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_clean("wrong identity", &text(&out));

    // show --reveal: the shares on stdout only, never in the logs on stderr.
    let out = s
        .rebox()
        .args(["-vvv", "key", "show", "--reveal", "-i", "me.key", "vk.age"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{SHARE1}\n{SHARE2}\n")
    );
    assert_clean(
        "show --reveal stderr",
        &String::from_utf8_lossy(&out.stderr),
    );

    // A failed export (identity does not match) leaks nothing either.
    let out = s
        .rebox()
        .args(["-vvv", "key", "export", "--from-stdin", "-r", &recipient])
        .arg("-i")
        .arg(&other)
        .args(["-o", "fail.age"])
        .write_stdin(SHARE1)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_clean("failed export", &text(&out));
    drop(id);

    // No temporary or extra file is left behind, and none holds the key in clear.
    let files = s.files();
    assert_eq!(
        files,
        [
            "extra.txt",
            "me.key",
            "other.key",
            "vk.age",
            "vk.age.paper.txt"
        ]
    );
    for f in ["vk.age", "vk.age.paper.txt"] {
        assert_clean(
            f,
            &String::from_utf8_lossy(&std::fs::read(s.path(f)).unwrap()),
        );
    }
}

#[test]
fn key_and_passphrase_never_appear_with_passphrase_at_vvv() {
    let s = Scratch::new();
    let mut cmd = s.rebox_std();
    cmd.args([
        "-vvv",
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
    assert!(out.stderr.contains("DEBUG") || out.stderr.contains("TRACE"));
    assert_clean("export -p", &out.all());

    for (args, reply) in [
        (vec!["-vvv", "key", "verify", "vk.age"], PASS),
        (
            vec!["-vvv", "key", "verify", "vk.age"],
            "wrong-passphrase-123",
        ),
    ] {
        let mut cmd = s.rebox_std();
        cmd.args(&args);
        let out = run_pty(cmd, None, false, &[("Passphrase for vk.age", reply)]);
        assert_clean("verify -p", &out.all());
        assert!(!out.all().contains("wrong-passphrase-123"), "{}", out.all());
    }
    assert_eq!(s.files(), ["vk.age"]);
}
