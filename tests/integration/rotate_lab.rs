//! `rebox rotate-unseal-key` against a lab server rebuilt by `rebox rebuild` (Vault initialised
//! and unsealed, its key in the Secret and in an offline backup). What rebox writes is
//! decrypted with the stock `age` CLI; Vault is driven from inside the lab with curl (keys
//! always on curl's stdin), sealed the way a real Vault is: its process
//! killed, the kubelet starting it again sealed.
//!
//! - happy path: the new key from the new file unseals a sealed Vault, the old one is refused,
//!   the auto-unseal CronJob unseals with the Secret; nothing secret in the output at -vvv;
//! - refusals: a wrong current key changes nothing; a rekey in progress is not clobbered;
//! - crash injection at every step boundary (`REBOX_FAILPOINT_EXIT_AFTER`, exit 86), once
//!   resuming with Vault's rekey intact, once after Vault was sealed (the rekey lost): some
//!   offline backup opens Vault at every point, and a rerun converges to one active key that
//!   is in the Secret and in the newest backup.

use crate::{common, key_support};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use common::{describe, lab_bundle, Lab};
use rebox_lab::server::LabOptions;

const KUBECTL: &str = "KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A rebuilt lab: Vault initialised and unsealed, key in the Secret and in `backup_path()`.
struct RotLab {
    lab: Lab,
    identity: PathBuf,
    recipient: String,
    vault_ip: String,
}

impl RotLab {
    fn start() -> RotLab {
        let lab = Lab::start(LabOptions::default());
        lab.trust();
        let bundle = lab_bundle(lab.dir.path());
        let out = lab
            .rebox_with_keys(&["--yes", "rebuild"], &bundle)
            .output()
            .unwrap();
        assert!(out.status.success(), "rebuild: {}", describe(&out));
        let (identity, recipient) = lab.age_identity();
        let vault_ip = lab
            .kubectl("-n security get svc vault -o jsonpath='{.spec.clusterIP}'")
            .trim()
            .to_string();
        RotLab {
            lab,
            identity,
            recipient,
            vault_ip,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.lab.dir.path().join(name)
    }

    /// `rebox --yes rotate-unseal-key` with the lab's connection flags and our age keys.
    fn rotate(&self, extra: &[&str]) -> Command {
        let mut cmd = self.rotate_base(&["-r", &self.recipient]);
        cmd.arg("-i").arg(&self.identity).args(extra);
        cmd
    }

    /// `rebox --yes rotate-unseal-key` with the lab's connection flags only.
    fn rotate_base(&self, extra: &[&str]) -> Command {
        self.rotate_cmd(true, extra)
    }

    /// `rebox [--yes] rotate-unseal-key` with the lab's connection flags only.
    fn rotate_cmd(&self, yes: bool, extra: &[&str]) -> Command {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("rebox"));
        cmd.env("HOME", self.lab.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("XDG_STATE_HOME")
            .env_remove("REBOX_FAILPOINT_EXIT_AFTER")
            .arg("--config")
            .arg(self.lab.dir.path().join("rebox.toml"))
            .args(if yes { &["--yes"][..] } else { &[][..] })
            .arg("rotate-unseal-key")
            .arg("--ssh-identity")
            .arg(self.lab.server.client_key())
            .arg("--known-hosts")
            .arg(self.lab.known_hosts())
            .args(extra);
        cmd
    }

    fn run_ok(&self, extra: &[&str]) -> Output {
        let out = self.rotate(extra).output().unwrap();
        assert!(out.status.success(), "rotate {extra:?}: {}", describe(&out));
        out
    }

    /// Where the rotation journal lives for this lab (HOME is the lab's dir).
    fn journal(&self) -> PathBuf {
        let host = self.lab.server.addr().to_string();
        self.lab
            .dir
            .path()
            .join(".local/state/rebox")
            .join(host)
            .join("rotation.age")
    }

    /// `bash -c shell` as root in the lab with `stdin`; (status ok, stdout).
    fn root_stdin(&self, shell: &str, stdin: &str) -> (bool, String) {
        let out = self.lab.root_with_stdin(shell, stdin);
        (out.status.success(), text(&out.stdout))
    }

    /// A Vault API call from inside the lab; the body (keys) on curl's stdin. Parsed JSON
    /// (null for an empty body).
    fn vault(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        let (ok, out) = self.root_stdin(
            &format!(
                "curl -sS -X {method} -H 'Content-Type: application/json' --data-binary @- http://{}:8200{path}",
                self.vault_ip
            ),
            body,
        );
        assert!(ok, "curl {method} {path} failed: {out}");
        if out.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path}: {e}: {out}"))
        }
    }

    /// Seals Vault as a crash does: bao's process killed, started again sealed by the kubelet.
    fn seal(&self) {
        let (ok, out) = self.root_stdin(&common::restart_vault(), "");
        assert!(ok, "vault restart: {out}");
        assert_eq!(
            self.seal_status()["sealed"],
            true,
            "the restart did not seal"
        );
    }

    fn seal_status(&self) -> serde_json::Value {
        let (ok, out) = self.root_stdin(
            &format!("curl -sS http://{}:8200/v1/sys/seal-status", self.vault_ip),
            "",
        );
        assert!(ok, "{out}");
        serde_json::from_str(&out).unwrap()
    }

    fn rekey_status(&self) -> serde_json::Value {
        let (ok, out) = self.root_stdin(
            &format!("curl -sS http://{}:8200/v1/sys/rekey/init", self.vault_ip),
            "",
        );
        assert!(ok, "{out}");
        serde_json::from_str(&out).unwrap()
    }

    /// Gives `shares` to a sealed Vault's unseal endpoint (after a reset); true if it opened.
    fn unseal_with(&self, shares: &[String]) -> bool {
        assert_eq!(
            self.seal_status()["sealed"],
            true,
            "unseal_with needs a sealed Vault"
        );
        self.vault("POST", "/v1/sys/unseal", r#"{"reset":true}"#);
        for s in shares {
            let v = self.vault(
                "POST",
                "/v1/sys/unseal",
                &serde_json::json!({ "key": s }).to_string(),
            );
            if v.get("errors").is_some() {
                return false;
            }
            if v["sealed"] == false {
                return true;
            }
        }
        false
    }

    /// The unseal shares in the Secret the CronJob reads.
    fn secret_shares(&self) -> Vec<String> {
        let b64 = self
            .lab
            .kubectl("-n security get secret vault-unseal-key -o jsonpath='{.data.key}'");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap();
        text(&raw)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Replaces the Secret's key (value on kubectl's stdin).
    fn set_secret(&self, shares: &[String]) {
        self.lab
            .server
            .run_as_root_ok(&format!(
                "{KUBECTL} -n security delete secret vault-unseal-key --ignore-not-found"
            ))
            .unwrap();
        let (ok, out) = self.root_stdin(
            &format!(
                "{KUBECTL} create secret generic vault-unseal-key -n security --from-file=key=/dev/stdin"
            ),
            &format!("{}\n", shares.join("\n")),
        );
        assert!(ok, "{out}");
    }

    /// The decrypted text of an age file, with the stock age CLI.
    fn age_decrypt(&self, file: &Path) -> String {
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&self.identity)
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "age -d {}: {}",
            file.display(),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// The unseal shares of a backup file, read with the stock age CLI.
    fn backup_shares(&self, file: &Path) -> Vec<String> {
        common::backup_shares_of(&self.lab.decrypted_backup(file))
    }

    /// The rotation journal, decrypted with the stock age CLI.
    fn journal_doc(&self) -> toml::Value {
        toml::from_str(&self.age_decrypt(&self.journal())).unwrap()
    }

    /// One active key, everywhere: no rekey pending, no journal, the Secret holds the key of
    /// `newest`, and after a seal that key opens Vault while `old` is refused.
    fn assert_converged(&self, newest: &Path, old: &[String], what: &str) {
        let new = self.backup_shares(newest);
        assert_ne!(new, old, "{what}: the key did not change");
        assert_eq!(
            self.rekey_status()["started"],
            false,
            "{what}: a rekey is left in Vault"
        );
        assert!(
            !self.journal().exists(),
            "{what}: the journal was left behind"
        );
        assert_eq!(
            sorted(self.secret_shares()),
            sorted(new.clone()),
            "{what}: Secret ≠ newest backup"
        );
        // The auto-unseal CronJob (every minute) would open the sealed Vault with the
        // Secret's key between our shares, so an old share would look accepted: it waits.
        self.auto_unseal(false);
        self.seal();
        let old_opens = self.unseal_with(old);
        if old_opens {
            self.seal();
        }
        let new_opens = self.unseal_with(&new);
        self.auto_unseal(true);
        assert!(!old_opens, "{what}: the old key still opens Vault");
        assert!(new_opens, "{what}: the newest backup does not open Vault");
    }

    /// Resumes (`true`) or suspends the `vault-auto-unseal` CronJob; suspended, also waits
    /// (up to 60 s) until none of its Jobs is still running.
    fn auto_unseal(&self, on: bool) {
        self.lab.kubectl(&format!(
            "-n security patch cronjob vault-auto-unseal --type=merge -p '{{\"spec\":{{\"suspend\":{}}}}}'",
            !on
        ));
        if !on {
            let (ok, out) = self.root_stdin(
                "export KUBECONFIG=/etc/rancher/k3s/k3s.yaml; for i in $(seq 600); do \
                 [ -z \"$(kubectl -n security get cronjob vault-auto-unseal -o jsonpath='{.status.active}')\" ] && exit 0; \
                 sleep 0.1; done; echo still active; exit 1",
                "",
            );
            assert!(ok, "the auto-unseal CronJob's Job did not finish: {out}");
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Every age file and journal in `dir` is armored age, never plain text.
fn assert_no_plaintext_key_files(dir: &Path, secrets: &[String]) {
    for entry in walk(dir) {
        let Ok(data) = std::fs::read(&entry) else {
            continue;
        };
        let t = text(&data);
        for s in secrets {
            assert!(
                !t.contains(s.as_str()),
                "{} holds a key in plain text",
                entry.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("bundle") {
                    out.extend(walk(&p));
                }
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn superseded_of(file: &Path) -> Vec<PathBuf> {
    let prefix = format!(
        "{}.superseded-",
        file.file_name().unwrap().to_string_lossy()
    );
    std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

#[test]
fn rotate_happy_path_new_key_opens_vault_old_key_refused_and_nothing_secret_printed() {
    let l = RotLab::start();
    let current = l.lab.backup_path();
    // An operator's extra secret in the backup (a fresh rebuild's backup holds none).
    l.lab
        .backup_with_extra(&current, "ops-admin-token", "ops.token-the-operator-keeps");
    let old = l.backup_shares(&current);
    assert_eq!(sorted(l.secret_shares()), sorted(old.clone()));

    let new_file = l.path("vault-key-2.age");
    let out = l.run_ok(&[
        "-vvv",
        "--json",
        "--from",
        current.to_str().unwrap(),
        "-o",
        new_file.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", describe(&out)));
    assert_eq!(report["outcome"], "rotated", "{report}");
    assert_eq!(report["resumed"], false);
    assert_eq!(report["vault_healthy"], true);
    assert_eq!(report["new_backup"], new_file.to_str().unwrap());

    // The new backup: 0600, opened by the stock age CLI, a new key; the old one renamed.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&new_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let new = l.backup_shares(&new_file);
    assert_ne!(new, old);
    assert!(!current.exists(), "the old backup was not renamed");
    let superseded = superseded_of(&current);
    assert_eq!(superseded.len(), 1, "{superseded:?}");
    assert_eq!(report["superseded_backup"], superseded[0].to_str().unwrap());
    assert_eq!(
        l.backup_shares(&superseded[0]),
        old,
        "the superseded file changed"
    );
    // The operator's extra secret of the old backup is carried over.
    let doc: toml::Value = toml::from_str(&l.age_decrypt(&new_file)).unwrap();
    let extras = doc["extra"].as_array().expect("extras carried over");
    assert!(
        extras
            .iter()
            .any(|e| e["name"].as_str() == Some("ops-admin-token")
                && e["value"].as_str() == Some("ops.token-the-operator-keeps")),
        "{doc}"
    );
    let fps: Vec<String> = report["new_fingerprints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(fps.len(), new.len());

    // Nothing secret in what rebox printed, at trace level.
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains("TRACE") || all.contains("DEBUG"),
        "no verbose logs"
    );
    let b64 = |shares: &[String]| {
        base64::engine::general_purpose::STANDARD.encode(format!("{}\n", shares.join("\n")))
    };
    for s in old
        .iter()
        .chain(new.iter())
        .cloned()
        .chain([b64(&old), b64(&new)])
    {
        assert!(!all.contains(&s), "a key leaked into the output");
    }
    assert_no_plaintext_key_files(l.lab.dir.path(), &[old.clone(), new.clone()].concat());

    l.assert_converged(&new_file, &old, "happy path");

    // The auto-unseal CronJob opens the sealed Vault with the Secret's (new) key.
    l.lab.kubectl(
        "-n security patch cronjob vault-auto-unseal --type=merge -p '{\"spec\":{\"suspend\":true}}'",
    );
    l.seal();
    l.lab
        .kubectl("-n security create job unseal-after-rotation --from=cronjob/vault-auto-unseal");
    l.lab.kubectl(
        "-n security wait --for=condition=complete --timeout=60s job/unseal-after-rotation",
    );
    assert_eq!(
        l.seal_status()["sealed"],
        false,
        "the CronJob did not unseal"
    );

    // A second rotation with the key from the Secret only (no --from), human report.
    let third = l.path("vault-key-3.age");
    let out = l.run_ok(&["-o", third.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Unseal key rotated"), "{stdout}");
    assert!(stdout.contains("password-manager"), "{stdout}");
    assert!(stdout.contains("What to do now"), "{stdout}");
    assert!(
        new_file.exists(),
        "a file not given with --from was renamed"
    );
    l.assert_converged(&third, &new, "second rotation from the Secret");

    // The Secret gone (deleted by mistake): the backup is the current key, and the rotation
    // creates the Secret with the new key.
    l.lab.kubectl("-n security delete secret vault-unseal-key");
    let fourth = l.path("vault-key-4.age");
    let out = l.run_ok(&[
        "--from",
        third.to_str().unwrap(),
        "-o",
        fourth.to_str().unwrap(),
    ]);
    assert!(
        text(&out.stderr).contains("does not exist; the rotation creates it"),
        "{}",
        describe(&out)
    );
    let third_key = l.backup_shares(&superseded_of(&third)[0]);
    l.assert_converged(&fourth, &third_key, "rotation that recreates the Secret");

    // In place (-o is the --from file), interrupted after verification: the new key is staged
    // next to the current file until then, and the rerun gives it the file's name.
    let in_place = [
        "--from",
        fourth.to_str().unwrap(),
        "-o",
        fourth.to_str().unwrap(),
    ];
    let staging = l.path("vault-key-4.age.rotating");
    let fourth_key = l.backup_shares(&fourth);
    let out = l
        .rotate(&in_place)
        .env("REBOX_FAILPOINT_EXIT_AFTER", "rotate-verified-recorded")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(86), "{}", describe(&out));
    assert_eq!(
        l.backup_shares(&fourth),
        fourth_key,
        "the current file changed early"
    );
    let staged = l.backup_shares(&staging);
    l.run_ok(&["--resume"]);
    assert!(!staging.exists(), "the staged backup was left behind");
    assert_eq!(
        l.backup_shares(&fourth),
        staged,
        "the file did not get the new key"
    );
    let sup = superseded_of(&fourth);
    assert_eq!(sup.len(), 1, "{sup:?}");
    assert_eq!(l.backup_shares(&sup[0]), fourth_key);
    l.assert_converged(&fourth, &fourth_key, "in place");

    // In place, interrupted before verification and Vault sealed: the file still holds the
    // active key and opens Vault; the rerun marks the staged key as never activated.
    let current_key = l.backup_shares(&fourth);
    let out = l
        .rotate(&in_place)
        .env("REBOX_FAILPOINT_EXIT_AFTER", "rotate-secret-recorded")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(86), "{}", describe(&out));
    l.seal();
    assert!(
        l.unseal_with(&l.backup_shares(&fourth)),
        "the current file does not open Vault"
    );
    let out = l
        .rotate(&in_place)
        .env("REBOX_FAILPOINT_EXIT_AFTER", "rotate-preflight")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(86), "{}", describe(&out));
    assert!(!staging.exists());
    assert!(
        walk(l.lab.dir.path()).iter().any(|p| p
            .to_string_lossy()
            .contains("vault-key-4.age.never-activated-")),
        "the staged key was not marked never activated"
    );
    assert_eq!(l.backup_shares(&fourth), current_key);
    assert_eq!(sorted(l.secret_shares()), sorted(current_key.clone()));
    l.run_ok(&in_place);
    l.assert_converged(&fourth, &current_key, "in place after a roll-back");
}

#[test]
fn rotate_refuses_a_wrong_current_key_and_an_existing_rekey_without_changing_anything() {
    let l = RotLab::start();
    let current = l.lab.backup_path();
    let good = l.backup_shares(&current);
    let out_file = l.path("new.age");

    // A backup of another key (same length, one hex digit changed).
    let wrong: Vec<String> = good
        .iter()
        .map(|s| {
            let mut b = s.clone().into_bytes();
            let mid = b.len() / 2;
            b[mid] = if b[mid] == b'0' { b'1' } else { b'0' };
            String::from_utf8(b).unwrap()
        })
        .collect();
    let wrong_file = l.path("wrong.age");
    let made = l
        .lab
        .rebox()
        .args(["key", "export", "--from-stdin", "--cluster", "homelab"])
        .args(["-r", &l.recipient, "-i"])
        .arg(&l.identity)
        .arg("-o")
        .arg(&wrong_file)
        .write_stdin(format!("{}\n", wrong.join("\n")))
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", describe(&made));

    let unchanged = |what: &str, secret: &[String]| {
        assert!(!out_file.exists(), "{what}: a new backup was written");
        assert!(!l.journal().exists(), "{what}: a journal was left");
        assert_eq!(
            l.rekey_status()["started"],
            false,
            "{what}: a rekey was left in Vault"
        );
        assert_eq!(
            sorted(l.secret_shares()),
            sorted(secret.to_vec()),
            "{what}: the Secret changed"
        );
        assert!(
            current.exists() && wrong_file.exists(),
            "{what}: a backup was renamed"
        );
        l.seal();
        assert!(
            l.unseal_with(&good),
            "{what}: the current key no longer opens Vault"
        );
    };

    // 1. The backup and the Secret disagree: refused before Vault is asked.
    let out = l
        .rotate(&[
            "--from",
            wrong_file.to_str().unwrap(),
            "-o",
            out_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("hold different keys"),
        "{}",
        describe(&out)
    );
    unchanged("backup ≠ Secret", &good);

    // 2. Both hold the wrong key: Vault refuses it, the rekey is cancelled.
    l.set_secret(&wrong);
    let out = l
        .rotate(&[
            "--from",
            wrong_file.to_str().unwrap(),
            "-o",
            out_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Vault refused the current key"), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    unchanged("Vault refuses the key", &wrong);
    l.set_secret(&good);

    let from_to = [
        "--from",
        current.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ];
    // Not confirmed (no --yes, no terminal to ask on).
    let out = l
        .rotate_cmd(
            false,
            &[
                &["-r", &l.recipient, "-i"][..],
                &[l.identity.to_str().unwrap()][..],
                &from_to[..],
            ]
            .concat(),
        )
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("not confirmed"),
        "{}",
        describe(&out)
    );
    unchanged("not confirmed", &good);
    // A sealed Vault: refused (the CronJob or the operator unseals first).
    l.seal();
    let out = l.rotate(&from_to).output().unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("Vault is sealed"),
        "{}",
        describe(&out)
    );
    assert!(
        l.unseal_with(&good),
        "the current key no longer opens Vault"
    );
    unchanged("sealed", &good);
    // 3. A rekey someone else started: reported with its nonce, left alone.
    let theirs = l.vault(
        "POST",
        "/v1/sys/rekey/init",
        r#"{"secret_shares":1,"secret_threshold":1,"require_verification":true}"#,
    );
    let nonce = theirs["nonce"].as_str().unwrap().to_string();
    let out = l
        .rotate(&[
            "--from",
            current.to_str().unwrap(),
            "-o",
            out_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("already in progress") && stderr.contains(&nonce),
        "{stderr}"
    );
    assert!(stderr.contains("--cancel-existing"), "{stderr}");
    let still = l.rekey_status();
    assert_eq!(still["started"], true, "the rekey was clobbered");
    assert_eq!(still["nonce"], nonce.as_str(), "the rekey was replaced");
    assert!(!out_file.exists() && !l.journal().exists());
    assert_eq!(sorted(l.secret_shares()), sorted(good.clone()));

    // Not even --cancel-existing touches it before the operator confirms.
    let out = l
        .rotate_cmd(
            false,
            &[
                &["-r", &l.recipient, "-i", l.identity.to_str().unwrap()][..],
                &["--cancel-existing"][..],
                &from_to[..],
            ]
            .concat(),
        )
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("not confirmed"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        l.rekey_status()["nonce"],
        nonce.as_str(),
        "cancelled unconfirmed"
    );

    // 4. --cancel-existing cancels it and rotates.
    let out = l.run_ok(&[
        "--cancel-existing",
        "--from",
        current.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert!(text(&out.stderr).contains(&nonce), "{}", describe(&out));
    l.assert_converged(&out_file, &good, "after --cancel-existing");

    // 5. --resume with nothing to resume is refused.
    let out = l.rotate(&["--resume"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no interrupted rotation"),
        "{}",
        describe(&out)
    );
}

/// The step boundaries of a rotation, in order (from the product, so a new one is covered).
fn boundaries() -> &'static [&'static str] {
    rebox::rotate::BOUNDARIES
}

/// Whether the new key is active at this boundary (Vault verified it).
fn new_key_active_at(boundary: &str) -> bool {
    let at = boundaries().iter().position(|b| *b == boundary).unwrap();
    at >= boundaries()
        .iter()
        .position(|b| *b == "rotate-verified")
        .unwrap()
}

/// Crash at every boundary; each rerun finds Vault's rekey as the crash left it and finishes
/// the rotation (with the very key Vault made before the crash, once it was saved).
#[test]
fn rotate_crash_at_every_boundary_then_rerun_finishes() {
    let l = RotLab::start();
    let mut current = l.lab.backup_path();
    for (n, boundary) in boundaries().iter().enumerate() {
        let old = l.backup_shares(&current);
        let out_file = l.path(&format!("crash-{n}.age"));
        let args = [
            "--from",
            current.to_str().unwrap(),
            "-o",
            out_file.to_str().unwrap(),
        ];
        let out = l
            .rotate(&args)
            .env("REBOX_FAILPOINT_EXIT_AFTER", boundary)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(86),
            "{boundary}: {}",
            describe(&out)
        );

        // The key that opens Vault right now is in a backup file and in the Secret, or the
        // journal holds it.
        let active_file = if new_key_active_at(boundary) {
            &out_file
        } else {
            &current
        };
        let active = l.backup_shares(active_file);
        if sorted(l.secret_shares()) != sorted(active.clone()) {
            let j = l.journal_doc();
            let field = if new_key_active_at(boundary) {
                "new_shares"
            } else {
                "old_shares"
            };
            let held: Vec<String> = j[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            assert_eq!(
                sorted(held),
                sorted(active.clone()),
                "{boundary}: the journal lacks the active key"
            );
            // … and says, in plain words for `age -d`, which key opens Vault and what to run.
            let plain = l.age_decrypt(&l.journal());
            for words in [
                "the CURRENT key (`old_shares`) is",
                "rebox rotate-unseal-key --resume",
            ] {
                assert!(
                    plain.contains(words),
                    "{boundary}: the journal does not say {words:?}"
                );
            }
        }
        // Once Vault made the new key and the journal has it, a rerun must finish with it.
        let journaled = l.journal().exists()
            && l.journal_doc()
                .get("new_shares")
                .and_then(|v| v.as_array())
                .is_some_and(|a| !a.is_empty());
        let expected_new: Option<Vec<String>> = journaled.then(|| {
            l.journal_doc()["new_shares"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        });

        // The rerun (alternately plain and --resume) converges.
        let mut rerun: Vec<&str> = args.to_vec();
        if n % 2 == 1 && l.journal().exists() {
            rerun.push("--resume");
        }
        let out = l.run_ok(&rerun);
        if let Some(expected) = expected_new {
            assert_eq!(
                sorted(l.backup_shares(&out_file)),
                sorted(expected),
                "{boundary}: the rerun did not finish with the key Vault made before the crash"
            );
            assert!(
                text(&out.stderr).contains("interrupted rotation"),
                "{boundary}: {}",
                describe(&out)
            );
        }
        assert!(
            !current.exists(),
            "{boundary}: the old backup was not renamed"
        );
        assert_eq!(superseded_of(&current).len(), 1, "{boundary}");
        l.assert_converged(&out_file, &old, boundary);
        current = out_file;
    }
}

/// Crash at every boundary, then Vault is sealed (which drops a pending rekey): some offline
/// backup file opens it, and a rerun converges (rolling back and rotating again when the new
/// key had not become active). Every other time the rerun itself faces the sealed Vault.
#[test]
fn rotate_crash_at_every_boundary_then_seal_then_rerun_converges() {
    let l = RotLab::start();
    // First to a key of 3 shares, 2 needed, so that every step below handles several shares
    // (the rotations keep the current shape when not told otherwise).
    let first = l.path("shares-3-of-2.age");
    let original = l.backup_shares(&l.lab.backup_path());
    l.run_ok(&[
        "--shares",
        "3",
        "--threshold",
        "2",
        "--from",
        l.lab.backup_path().to_str().unwrap(),
        "-o",
        first.to_str().unwrap(),
    ]);
    assert_eq!(l.backup_shares(&first).len(), 3);
    let status = l.seal_status();
    assert_eq!(
        (status["t"].as_u64(), status["n"].as_u64()),
        (Some(2), Some(3))
    );
    l.assert_converged(&first, &original, "to 3 shares, 2 needed");
    let mut current = first;
    for (n, boundary) in boundaries().iter().enumerate() {
        let old = l.backup_shares(&current);
        let out_file = l.path(&format!("sealed-{n}.age"));
        let args = [
            "--from",
            current.to_str().unwrap(),
            "-o",
            out_file.to_str().unwrap(),
        ];
        let out = l
            .rotate(&args)
            .env("REBOX_FAILPOINT_EXIT_AFTER", boundary)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(86),
            "{boundary}: {}",
            describe(&out)
        );

        // Vault seals (pod restart, power cut): an offline backup file opens it.
        let had_journal = l.journal().exists();
        l.seal();
        let candidates: Vec<PathBuf> = [current.clone(), out_file.clone()]
            .into_iter()
            .filter(|p| p.exists())
            .collect();
        let opener = candidates
            .iter()
            .find(|f| l.unseal_with(&l.backup_shares(f)))
            .unwrap_or_else(|| panic!("{boundary}: no offline backup opens Vault ({candidates:?})"))
            .clone();
        let expected = if new_key_active_at(boundary) {
            &out_file
        } else {
            &current
        };
        assert_eq!(&opener, expected, "{boundary}: the wrong file opened Vault");
        // Every other time the rerun meets the sealed Vault itself (only an interrupted
        // rotation unseals; a new one requires an unsealed Vault).
        if had_journal && n % 2 == 0 {
            l.seal();
        }

        // A rerun stopped right before it would start a new rotation: an interrupted one whose
        // new key never became active is rolled back by then — the Secret holds the current
        // key again, Vault has no rekey, the journal is gone — and an active new key was
        // finished instead (the run then succeeds without reaching that boundary).
        // Here the rerun must ask Vault which key it accepts (a probe rekey): stopped while
        // the probe's rekey is open, the next run recognises that rekey as its own.
        if *boundary == "rotate-secret-recorded" {
            assert_eq!(
                l.seal_status()["sealed"],
                false,
                "the probe needs an unsealed Vault"
            );
            let out = l
                .rotate(&args)
                .env("REBOX_FAILPOINT_EXIT_AFTER", "rotate-probe-started")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(86), "probe: {}", describe(&out));
            let rekey = l.rekey_status();
            assert_eq!(rekey["started"], true, "no probe rekey is open");
            assert_eq!(
                l.journal_doc()["probe_nonce"].as_str(),
                rekey["nonce"].as_str(),
                "the journal does not name the probe rekey"
            );
        }
        // At -vvv: what a recovery prints is checked for keys below.
        let first = l
            .rotate(&[&["-vvv"][..], &args[..]].concat())
            .env("REBOX_FAILPOINT_EXIT_AFTER", "rotate-preflight")
            .output()
            .unwrap();
        let mut stderr = text(&first.stderr);
        let verbose = format!("{}{stderr}", text(&first.stdout));
        assert!(verbose.contains("TRACE"), "{boundary}: not at trace level");
        if new_key_active_at(boundary) {
            assert!(first.status.success(), "{boundary}: {}", describe(&first));
        } else {
            assert_eq!(
                first.status.code(),
                Some(86),
                "{boundary}: {}",
                describe(&first)
            );
            assert_eq!(
                sorted(l.secret_shares()),
                sorted(old.clone()),
                "{boundary}: the Secret does not hold the active (current) key after the roll-back"
            );
            assert_eq!(
                l.rekey_status()["started"],
                false,
                "{boundary}: a rekey is left"
            );
            assert!(
                !l.journal().exists(),
                "{boundary}: the journal outlived the roll-back"
            );
            assert!(
                !out_file.exists(),
                "{boundary}: an inactive key's backup kept the new name"
            );
            assert!(
                current.exists(),
                "{boundary}: the current backup was renamed"
            );
            // The rest of the rerun.
            let out = l.run_ok(&args);
            stderr.push_str(&text(&out.stderr));
        }
        if had_journal {
            assert!(
                stderr.contains("found an interrupted rotation"),
                "{boundary}: {stderr}"
            );
        }
        let never_activated = walk(l.lab.dir.path()).into_iter().any(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("sealed-{n}.age.never-activated-"))
        });
        if new_key_active_at(boundary) {
            assert!(
                !never_activated,
                "{boundary}: an active key's backup was retired"
            );
        } else if had_journal {
            assert!(stderr.contains("rolled back"), "{boundary}: {stderr}");
            let written = boundaries().iter().position(|b| b == boundary)
                >= boundaries()
                    .iter()
                    .position(|b| *b == "rotate-backup-written");
            assert_eq!(
                never_activated, written,
                "{boundary}: the unused new backup is not marked"
            );
        }
        assert_eq!(
            l.seal_status()["sealed"],
            false,
            "{boundary}: the rerun left Vault sealed"
        );
        assert!(
            !current.exists(),
            "{boundary}: the old backup was not renamed"
        );
        l.assert_converged(&out_file, &old, boundary);
        let mut keys = old.clone();
        keys.extend(l.backup_shares(&out_file));
        for p in walk(l.lab.dir.path()) {
            if p.to_string_lossy()
                .contains(&format!("sealed-{n}.age.never-activated-"))
            {
                keys.extend(l.backup_shares(&p));
            }
        }
        for k in &keys {
            assert!(
                !verbose.contains(k.as_str()),
                "{boundary}: a key leaked at -vvv"
            );
        }
        current = out_file;
    }
}

/// The new backup protected by a passphrase typed on the terminal (twice), the journal too;
/// after a crash with the Secret already holding the not-yet-active key, `--resume` asks for
/// that passphrase and finishes.
#[test]
fn rotate_with_a_passphrase_on_the_terminal_resumes_after_a_crash() {
    use key_support::{run_pty, PASS};
    use rebox::keys::{crypt, BackupDocument};
    use rebox::secret::SecretText;

    let l = RotLab::start();
    let current = l.lab.backup_path();
    let old = l.backup_shares(&current);
    let out_file = l.path("pass.age");
    let id = l.identity.to_str().unwrap().to_string();
    let mut cmd = l.rotate_base(&[
        "-p",
        "-i",
        &id,
        "--from",
        current.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    cmd.env("REBOX_FAILPOINT_EXIT_AFTER", "rotate-secret-recorded");
    let out = run_pty(
        cmd,
        Some(""),
        false,
        &[("Passphrase for", PASS), ("Same passphrase again", PASS)],
    );
    assert_eq!(out.status.code(), Some(86), "{}", out.all());
    assert!(!out.all().contains(PASS), "the passphrase was echoed");
    // The journal is passphrase-protected age, like the backup already written.
    for f in [l.journal(), out_file.clone()] {
        let raw = std::fs::read(&f).unwrap();
        assert!(
            crypt::open(&raw, "f").unwrap().is_passphrase(),
            "{} is not passphrase-protected",
            f.display()
        );
    }
    assert_ne!(
        sorted(l.secret_shares()),
        sorted(old.clone()),
        "the Secret was not updated"
    );

    // The resume asks for the passphrase of the interrupted rotation (no -p needed).
    let cmd = l.rotate_base(&["-i", &id, "--resume"]);
    let out = run_pty(
        cmd,
        Some(""),
        false,
        &[("Passphrase of the interrupted rotation", PASS)],
    );
    assert!(out.status.success(), "{}", out.all());
    assert!(!out.all().contains(PASS), "the passphrase was echoed");

    let raw = std::fs::read(&out_file).unwrap();
    let plain = crypt::open(&raw, "new")
        .unwrap()
        .decrypt_with_passphrase(&SecretText::new(PASS.to_string()))
        .unwrap();
    let doc = BackupDocument::parse(&plain).unwrap();
    let new: Vec<String> = doc
        .unseal
        .shares
        .iter()
        .map(|s| s.key.expose().to_string())
        .collect();
    assert_ne!(new, old);
    assert!(!l.journal().exists());
    assert!(!current.exists(), "the old backup was not renamed");
    assert_eq!(sorted(l.secret_shares()), sorted(new.clone()));
    l.seal();
    assert!(!l.unseal_with(&old), "the old key still opens Vault");
    assert!(l.unseal_with(&new), "the new key does not open Vault");
}
