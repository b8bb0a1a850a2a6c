//! `rebox init`, config errors and the generated docs, through the real binary.

use assert_cmd::Command;
use predicates::prelude::*;

fn rebox(dir: &std::path::Path) -> Command {
    let mut cmd = Command::cargo_bin("rebox").unwrap();
    cmd.current_dir(dir)
        .env("HOME", dir)
        .env_remove("REBOX_CONFIG");
    cmd
}

#[test]
fn init_defaults_writes_a_commented_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    rebox(dir.path())
        .args(["init", "--defaults"])
        .assert()
        .success();
    let text = std::fs::read_to_string(dir.path().join("rebox.toml")).unwrap();
    assert!(text.contains("pvc = \"vault-data-lh\""), "{text}");
    assert!(text.contains("store = \"k8s-secrets\""), "{text}");
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() > 5,
        "not commented:\n{text}"
    );

    std::fs::write(dir.path().join("rebox.toml"), "# mine\n").unwrap();
    rebox(dir.path())
        .args(["init", "--defaults"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--force"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rebox.toml")).unwrap(),
        "# mine\n"
    );
    rebox(dir.path())
        .args(["init", "--defaults", "--force"])
        .assert()
        .success();
}

#[test]
fn init_without_a_terminal_asks_for_defaults_flag() {
    let dir = tempfile::tempdir().unwrap();
    rebox(dir.path())
        .arg("init")
        .assert()
        .failure()
        .stderr(predicate::str::contains("--defaults"));
    assert!(!dir.path().join("rebox.toml").exists());
}

#[test]
fn config_mistake_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rebox.toml"),
        "[server]\nhost = \"10.0.0.5\"\nuesr = \"homelab\"\n",
    )
    .unwrap();
    rebox(dir.path()).arg("preflight").assert().code(1).stderr(
        predicate::str::contains("rebox.toml")
            .and(predicate::str::contains("line 3"))
            .and(predicate::str::contains("uesr")),
    );
}

#[test]
fn explicit_config_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    rebox(dir.path())
        .args(["--config", "nope.toml", "preflight"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nope.toml does not exist"));
}

#[test]
fn preflight_without_a_host_says_how_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    rebox(dir.path())
        .arg("preflight")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--host"));
}

#[test]
fn completions_and_man_page_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    rebox(dir.path())
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("preflight"));
    rebox(dir.path())
        .arg("man")
        .assert()
        .success()
        .stdout(predicate::str::contains(".TH rebox"));
}
