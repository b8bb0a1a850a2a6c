//! `rebox rebuild --restore-from-nas` against lab servers with a NAS fixture: a homelab is
//! rebuilt fresh, its Vault volume and eight app volumes (three namespaces) are backed up to
//! the NAS, the node is destroyed (fresh overlay, new host key), and the restore brings it
//! all back: every PVC bound to a volume holding the backup's data, Vault unsealed with the
//! ORIGINAL key from the offline backup, ESO Ready, Argo CD synced. Along the way: the guard
//! refuses a cluster with data, the data-loss table matches the fixture, a wrong key leaves
//! Vault sealed, a kill after every phase resumes, no secret reaches the output at -vvv.
//! A second lab covers the failures: unreachable or empty NAS (nothing touched), a corrupt
//! backup (only it fails; a rerun retries only it), and a Vault volume without data.

use crate::common;
use common::describe;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{lab_bundle, Lab};
use rebox_lab::chrono::{Duration as ChronoDuration, Utc};
use rebox_lab::k3s::controllers::longhorn::volume_data_dir;
use rebox_lab::nas::{BuiltNas, NasFixture, VolumeData};
use rebox_lab::server::LabOptions;

const K3S_DATA: &str = "/var/lib/rancher/k3s";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `rebox --yes rebuild --restore-from-nas` with the lab's settings, the bundle and a key file.
fn restore_cmd(lab: &Lab, bundle: &Path, key_file: &Path, extra: &[&str]) -> Command {
    let (id, _) = lab.age_identity();
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("rebox"));
    cmd.env("HOME", lab.dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("REBOX_FAILPOINT_EXIT_AFTER")
        .arg("--config")
        .arg(lab.dir.path().join("rebox.toml"))
        .args(["--yes", "rebuild", "--restore-from-nas"])
        .args(lab.conn_args())
        .arg("--bundle")
        .arg(bundle)
        .arg("--key-file")
        .arg(key_file)
        .arg("--key-identity")
        .arg(id)
        .args(extra);
    cmd
}

/// Every regular file under `dir`, by relative path.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.is_file() {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    if dir.is_dir() {
        walk(dir, dir, &mut out);
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Puts a NAS fixture built on the host at the lab's NFS export (`/backups` on the server).
fn publish_nas(lab: &Lab, nas_dir: &Path) {
    lab.server
        .run_as_root_ok("rm -rf /backups && mkdir -p /backups")
        .unwrap();
    copy_dir(nas_dir, &lab.server.merged_path("/backups"));
}

/// A backup of cluster "homelab" holding a key (and an operator's extra) this lab's Vault never had.
fn wrong_key_file(lab: &Lab) -> PathBuf {
    let (_, public) = lab.age_identity();
    let path = lab.dir.path().join("wrong-key.age");
    let out = lab
        .rebox()
        .args(["key", "export", "--from-stdin", "-r", &public, "-o"])
        .arg(&path)
        .args(["--extra-from-env", "ops-admin-token=WRONG_TOKEN"])
        .env("WRONG_TOKEN", "hvs.not-this-vaults-token")
        .write_stdin("bm90LXRoZS1rZXktb2YtdGhpcy12YXVsdC0wMDAwMDA=")
        .output()
        .unwrap();
    assert!(out.status.success(), "key export: {}", describe(&out));
    path
}

fn app_volumes() -> Vec<(&'static str, &'static str, &'static str, i64)> {
    // (volume, namespace, pvc, hours since its last backup)
    vec![
        ("pvc-photos", "media", "photos", 3),
        ("pvc-music", "media", "music", 2),
        ("pvc-wiki", "apps", "wiki-data", 1),
        ("pvc-gitea", "apps", "gitea-data", 4),
        ("pvc-db", "apps", "postgres-data", 5),
        ("pvc-grafana", "monitoring", "grafana", 6),
        ("pvc-prom", "monitoring", "prometheus", 7),
        ("pvc-loki", "monitoring", "loki", 8),
    ]
}

fn app_data(volume: &str, generation: u8) -> VolumeData {
    VolumeData::Files(vec![
        (
            "README".into(),
            format!("{volume} generation {generation}\n").into_bytes(),
        ),
        (
            format!("data/{volume}.bin"),
            (0..4096u32)
                .map(|i| (i as u8) ^ generation ^ volume.len() as u8)
                .collect(),
        ),
    ])
}

/// The restored volume's files as the Longhorn stand-in holds them on the server.
fn restored_files(lab: &Lab, volume: &str) -> BTreeMap<String, Vec<u8>> {
    files(
        &lab.server.merged_path(
            volume_data_dir(Path::new(K3S_DATA), volume)
                .to_str()
                .unwrap(),
        ),
    )
}

fn expected_files(data: &VolumeData) -> BTreeMap<String, Vec<u8>> {
    match data {
        VolumeData::Files(f) => f.iter().cloned().collect(),
        VolumeData::Dir(d) => files(d),
    }
}

fn phase_ids(lab: &Lab, bundle: &Path, key: &Path) -> Vec<String> {
    let mut cmd = restore_cmd(lab, bundle, key, &["--dry-run"]);
    cmd.arg("--json");
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "dry run: {}", describe(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("dry run printed no JSON ({e}): {}", describe(&out)));
    plan.as_array()
        .expect("a list of phases")
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn restore_brings_back_every_volume_and_vault_with_its_original_key_and_resumes_at_every_phase() {
    let started = Instant::now();
    let mut lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());

    // 1. The homelab as it was: a fresh rebuild, Vault initialised, its key in the backup.
    let out = lab
        .rebox_with_keys(&["--yes", "rebuild"], &bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "fresh rebuild: {}", describe(&out));
    let key_file = lab.backup_path();
    // The fresh backup holds the key only (rebox keeps no root token); the operator adds a
    // named extra of their own (`rebox key export --extra-from-env`).
    lab.backup_with_extra(&key_file, "ops-admin-token", "ops.token-the-operator-keeps");
    // Vault's Kubernetes auth as a hand-made setup often leaves it: pinned to this cluster's
    // CA, which the rebuilt cluster will not have. The restore must find and repair it.
    let shares = common::backup_shares_of(&lab.decrypted_backup(&key_file));
    let old_ca = lab
        .server
        .run_as_root_ok("cat /var/lib/rancher/k3s/server/tls/server-ca.crt")
        .unwrap();
    let pinned = lab.as_vault_root(
        &shares,
        &serde_json::json!([["POST", "/v1/auth/kubernetes/config",
            {"kubernetes_host": "https://kubernetes.default.svc", "kubernetes_ca_cert": old_ca}]]),
    );
    assert_eq!(pinned[0][0], 204, "pinning the CA: {pinned}");
    let vault_volume = lab
        .kubectl("-n security get pvc vault-data-lh -o jsonpath='{.spec.volumeName}'")
        .trim()
        .to_string();
    assert!(!vault_volume.is_empty());
    let scratch = tempfile::tempdir().unwrap();
    let vault_copy = scratch.path().join("vault-data");
    std::fs::create_dir_all(&vault_copy).unwrap();
    copy_dir(
        &lab.server.merged_path(
            volume_data_dir(Path::new(K3S_DATA), &vault_volume)
                .to_str()
                .unwrap(),
        ),
        &vault_copy,
    );
    assert!(!files(&vault_copy).is_empty(), "Vault wrote no data");

    // 2. Its backups on the NAS: Vault's volume and eight app volumes in three namespaces;
    //    pvc-wiki has an older backup too (the newest must win).
    let now = Utc::now();
    let nas_dir = scratch.path().join("nas");
    let mut fixture = NasFixture::new(&nas_dir).volume(
        &vault_volume,
        "security",
        "vault-data-lh",
        VolumeData::Dir(vault_copy.clone()),
        now - ChronoDuration::minutes(30),
    );
    fixture = fixture.volume(
        "pvc-wiki",
        "apps",
        "wiki-data",
        app_data("pvc-wiki", 0),
        now - ChronoDuration::hours(30),
    );
    for (v, ns, pvc, hours) in app_volumes() {
        fixture = fixture.volume(
            v,
            ns,
            pvc,
            app_data(v, 1),
            now - ChronoDuration::hours(hours),
        );
    }
    let nas: BuiltNas = fixture.build().unwrap();
    publish_nas(&lab, &nas_dir);

    // 3. The guard: this cluster already holds data, so a restore onto it is refused.
    let out = restore_cmd(&lab, &bundle, &key_file, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("already holds data")
            && text(&out.stderr).contains("vault-data-lh"),
        "{}",
        describe(&out)
    );

    // 4. The node dies; a fresh server takes its place (new host key); the NAS survives.
    lab.server.rebuild().unwrap();
    lab.trust();
    publish_nas(&lab, &nas_dir);
    assert!(!lab.server.merged_path("/usr/local/bin/k3s").exists());

    // A bootstrap Secret filled from the backup's extra secrets (here the one the operator
    // added after the fresh rebuild).
    let config_path = lab.dir.path().join("rebox.toml");
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    config.push_str("\n[[bootstrap_secrets]]\nsource = \"ops-admin-token\"\nnamespace = \"ops\"\nsecret = \"vault-admin\"\nkey = \"token\"\n");
    std::fs::write(&config_path, config).unwrap();

    // 5. Killed after every phase in turn: each rerun resumes. Before Vault's unseal, one
    //    run with a wrong backup: refused, Vault stays sealed, nothing is deleted.
    let ids = phase_ids(&lab, &bundle, &key_file);
    for id in [
        "restore-guard",
        "restore-volumes",
        "vault-restored",
        "bootstrap-secrets",
    ] {
        assert!(ids.iter().any(|i| i == id), "no phase {id} in {ids:?}");
    }
    assert!(!ids.iter().any(|i| i == "vault-init"), "{ids:?}");
    let mut first_stdout = String::new();
    for (n, id) in ids.iter().enumerate() {
        if id == "vault-unseal" {
            let wrong = wrong_key_file(&lab);
            let out = restore_cmd(&lab, &bundle, &wrong, &[]).output().unwrap();
            assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
            assert!(
                text(&out.stderr).contains("did not accept the key"),
                "{}",
                describe(&out)
            );
            let sealed = lab.kubectl(
                "-n security get pod vault-0 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'",
            );
            assert_ne!(sealed.trim(), "True", "Vault unsealed with a wrong key");
            assert!(
                lab.kubectl("-n security get secret -o name")
                    .lines()
                    .all(|l| !l.contains("vault-unseal-key")),
                "the wrong key reached the Secret"
            );
            assert_eq!(
                lab.kubectl("get pvc -A -o name").lines().count(),
                9,
                "a PVC went away after the wrong key"
            );
        }
        let out = restore_cmd(&lab, &bundle, &key_file, &["-vvv"])
            .env("REBOX_FAILPOINT_EXIT_AFTER", id)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(86),
            "the failpoint after `{id}` did not stop rebox: {}",
            describe(&out)
        );
        if id == "vault-for-eso" {
            assert!(
                text(&out.stderr).contains("holds a pinned kubernetes_ca_cert")
                    && text(&out.stderr).contains("configured auth/kubernetes in-cluster"),
                "the pinned CA was not found and repaired: {}",
                describe(&out)
            );
        }
        if n > 0 {
            assert!(
                text(&out.stderr).contains("resuming rebuild --restore-from-nas"),
                "{}",
                describe(&out)
            );
        } else {
            first_stdout = text(&out.stdout);
        }
        assert_no_secret(&lab, &key_file, &out);
    }

    // 6. The data-loss table, shown before anything changed, matches the fixture.
    for (v, ns, pvc, hours) in app_volumes() {
        let line = first_stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{v} ")))
            .unwrap_or_else(|| panic!("no table line for {v}:\n{first_stdout}"));
        assert!(line.contains(&format!("{ns}/{pvc}")), "{line}");
        let at = nas.volume(v).last_backup().created.clone();
        assert!(
            line.contains(&at.trim_end_matches('Z').replace('T', " ")),
            "{line} lacks {at}"
        );
        assert!(
            line.contains(&format!("{hours}h00m")) || line.contains(&format!("{hours}h01m")),
            "{line}: age should be {hours}h"
        );
    }

    // 7. The last run finishes; its report says what came back.
    let out = restore_cmd(&lab, &bundle, &key_file, &["-vvv"])
        .output()
        .unwrap();
    assert!(out.status.success(), "final run: {}", describe(&out));
    assert_no_secret(&lab, &key_file, &out);
    assert!(
        text(&out.stdout).contains("Restore finished"),
        "{}",
        describe(&out)
    );

    // Every PVC bound to its restored volume, holding the newest backup's data.
    for (v, ns, pvc, _) in
        app_volumes()
            .into_iter()
            .chain([(vault_volume.as_str(), "security", "vault-data-lh", 0)])
    {
        let got = lab.kubectl(&format!(
            "-n {ns} get pvc {pvc} -o jsonpath='{{.status.phase}}/{{.spec.volumeName}}'"
        ));
        assert_eq!(got.trim(), format!("Bound/{v}"), "PVC {ns}/{pvc}");
    }
    for (v, ..) in app_volumes() {
        assert_eq!(
            restored_files(&lab, v),
            expected_files(&app_data(v, 1)),
            "{v} does not hold its newest backup"
        );
    }
    // Vault's data came back; the original key (never a new init) unsealed it.
    let restored_vault = restored_files(&lab, &vault_volume);
    for (path, content) in files(&vault_copy) {
        if path.ends_with(".lock") {
            continue;
        }
        assert!(restored_vault.contains_key(&path), "Vault lost {path}");
        let _ = content;
    }
    let ready = lab.kubectl(
        "-n security get pod vault-0 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'",
    );
    assert_eq!(ready.trim(), "True", "Vault is not unsealed");
    let share = share_of(&decrypted_backup(&lab, &key_file));
    let in_secret =
        lab.kubectl("-n security get secret vault-unseal-key -o jsonpath='{.data.key}'");
    use base64::Engine;
    let in_secret = base64::engine::general_purpose::STANDARD
        .decode(in_secret.trim())
        .unwrap();
    assert_eq!(String::from_utf8(in_secret).unwrap().trim(), share);
    let admin = lab.kubectl("-n ops get secret vault-admin -o jsonpath='{.data.token}'");
    assert_eq!(
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(admin.trim())
                .unwrap()
        )
        .unwrap(),
        extra_of(&decrypted_backup(&lab, &key_file), "ops-admin-token"),
        "the bootstrap Secret does not hold the backup's value"
    );
    // ESO's store Ready, the root app Synced and Healthy.
    let store = lab.kubectl(
        "get clustersecretstore k8s-secrets -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'",
    );
    assert_eq!(store.trim(), "True");
    let config = lab.as_vault_root(
        &shares,
        &serde_json::json!([["GET", "/v1/auth/kubernetes/config", null]]),
    );
    assert_eq!(
        config[0][1]["data"]["kubernetes_ca_cert"], "",
        "the old cluster's CA is still pinned: {config}"
    );
    // No root token outlived the restore (generate-root's, revoked at the end of the phase).
    assert_eq!(lab.live_root_tokens(&shares), Vec::<String>::new());
    let app = lab.kubectl(
        "-n argocd get application root -o jsonpath='{.status.sync.status}/{.status.health.status}'",
    );
    assert_eq!(app.trim(), "Synced/Healthy");

    // The report beside the journal.
    let host = lab.server.addr().to_string();
    let report_path = lab
        .dir
        .path()
        .join(".local/state/rebox")
        .join(&host)
        .join("restore-report.json");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["succeeded"], true);
    assert_eq!(report["volumes"].as_array().unwrap().len(), 9, "{report}");
    assert!(report["apps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "root" && a["sync"] == "Synced"));
    assert!(report["recurring_jobs"]
        .as_str()
        .unwrap()
        .contains("no recurring backup job"));
    let mode = std::fs::metadata(&report_path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    eprintln!(
        "{} phases, restore rehearsal in {:.1}s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The offline backup's document, decrypted by the stock age CLI.
fn decrypted_backup(lab: &Lab, key_file: &Path) -> toml::Value {
    lab.decrypted_backup(key_file)
}

/// The (first) unseal share of a decrypted backup.
fn share_of(doc: &toml::Value) -> String {
    doc["unseal"]["shares"][0]["key"]
        .as_str()
        .expect("a key in the backup")
        .to_string()
}

/// The value of a decrypted backup's extra secret.
fn extra_of(doc: &toml::Value, name: &str) -> String {
    doc["extra"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no extra {name} in the backup"))
        .to_string()
}

fn assert_no_secret(lab: &Lab, key_file: &Path, out: &Output) {
    let doc = decrypted_backup(lab, key_file);
    let (share, token) = (share_of(&doc), extra_of(&doc, "ops-admin-token"));
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !text(stream).contains(&share),
            "the unseal key appeared in rebox's output"
        );
        assert!(
            !text(stream).contains(&token),
            "an extra secret appeared in rebox's output"
        );
    }
}

#[test]
fn restore_failures_touch_nothing_or_only_what_failed() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    let key_file = wrong_key_file(&lab); // any backup of "homelab"; Vault never gets that far
    let config_path = lab.dir.path().join("rebox.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();

    // A bootstrap secret the backup lacks, without a terminal to ask: refused before the
    // server is touched.
    std::fs::write(
        &config_path,
        format!("{config}\n[[bootstrap_secrets]]\nsource = \"cloudflare-api-token\"\nnamespace = \"cert-manager\"\nsecret = \"cloudflare\"\nkey = \"api-token\"\n"),
    )
    .unwrap();
    let out = restore_cmd(&lab, &bundle, &key_file, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("holds no cloudflare-api-token"),
        "{}",
        describe(&out)
    );
    assert!(!lab.server.merged_path("/var/lib/rebox").exists());
    assert!(
        !lab.server.merged_path("/usr/sbin/mount.nfs").exists(),
        "the server was changed"
    );

    // An unreachable NAS: stopped before the server changes (no k3s).
    std::fs::write(
        &config_path,
        config.replace(
            &format!("nfs://{}:/backups", lab.server.host_addr()),
            "nfs://127.0.0.1:/backups",
        ),
    )
    .unwrap();
    let out = restore_cmd(&lab, &bundle, &key_file, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("did not let the server mount"),
        "{}",
        describe(&out)
    );
    std::fs::write(&config_path, &config).unwrap();

    // An empty NAS: nothing to restore, nothing touched.
    lab.server.run_as_root_ok("mkdir -p /backups").unwrap();
    let out = restore_cmd(&lab, &bundle, &key_file, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("holds no Longhorn backups"),
        "{}",
        describe(&out)
    );
    assert!(!lab.server.merged_path("/usr/local/bin/k3s").exists());
    assert!(!lab
        .server
        .merged_path("/var/lib/rebox/journal.json")
        .exists());

    // A corrupt backup: the other volumes restore, the run names the bad one.
    let scratch = tempfile::tempdir().unwrap();
    let nas_dir = scratch.path().join("nas");
    let now = Utc::now();
    let good = |f: NasFixture| {
        f.volume(
            "pvc-vault",
            "security",
            "vault-data-lh",
            VolumeData::Files(vec![("README".into(), b"no vault data here".to_vec())]),
            now - ChronoDuration::hours(1),
        )
        .volume(
            "pvc-a",
            "apps",
            "a",
            app_data("pvc-a", 1),
            now - ChronoDuration::hours(1),
        )
        .volume(
            "pvc-b",
            "apps",
            "b",
            app_data("pvc-b", 1),
            now - ChronoDuration::hours(1),
        )
    };
    good(NasFixture::new(&nas_dir))
        .corrupt("pvc-b")
        .build()
        .unwrap();
    publish_nas(&lab, &nas_dir);
    let out = restore_cmd(&lab, &bundle, &key_file, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("1 of 3 volume(s) did not restore") && stderr.contains("pvc-b"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        restored_files(&lab, "pvc-a"),
        expected_files(&app_data("pvc-a", 1))
    );
    let uid = |v: &str| {
        lab.kubectl(&format!(
            "-n longhorn-system get volumes.longhorn.io {v} -o jsonpath='{{.metadata.uid}}'"
        ))
    };
    let (uid_a, uid_b) = (uid("pvc-a"), uid("pvc-b"));

    // The NAS is mended; a rerun retries only pvc-b, then stops at Vault: its volume came
    // back without Vault's data, and rebox never initialises on a restore.
    std::fs::remove_dir_all(&nas_dir).unwrap();
    good(NasFixture::new(&nas_dir)).build().unwrap();
    publish_nas(&lab, &nas_dir);
    let out = restore_cmd(&lab, &bundle, &key_file, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("UNINITIALISED"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        uid("pvc-a"),
        uid_a,
        "the restored volume was restored again"
    );
    assert_ne!(uid("pvc-b"), uid_b, "the failed volume was not retried");
    assert_eq!(
        restored_files(&lab, "pvc-b"),
        expected_files(&app_data("pvc-b", 1))
    );
}
