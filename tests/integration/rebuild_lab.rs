//! `rebox rebuild` (k3s half) against a lab server: the real binary over real SSH, the k3s
//! stand-in uploaded from a bundle and started by the lab's systemctl, node Ready through the
//! tunnel. Reruns and interruptions resume; a bad checksum or a foreign k3s is refused.

use crate::common;
use std::time::{Duration, Instant};

use common::{describe, lab_bundle, sha256_hex, Lab};
use rebox_lab::server::LabOptions;

fn rebuild_cmd(lab: &Lab, bundle: &std::path::Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = lab.rebox_with_keys(&["--yes", "rebuild"], bundle);
    cmd.args(extra);
    cmd
}

fn rebuild(lab: &Lab, bundle: &std::path::Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    assert_cmd::assert::OutputAssertExt::assert(&mut rebuild_cmd(lab, bundle, extra))
}

#[test]
fn rebuild_installs_k3s_and_a_rerun_has_nothing_left_to_do() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    let out = rebuild(&lab, &bundle, &[]).success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.contains("Rebuild finished"), "{stdout}");

    // What landed on the server's disk.
    assert_eq!(
        sha256_hex(&lab.server.path("/usr/local/bin/k3s")),
        sha256_hex(&bundle.join("k3s"))
    );
    let unit = std::fs::read_to_string(lab.server.path("/etc/systemd/system/k3s.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/k3s server"),
        "{unit}"
    );
    let config = std::fs::read_to_string(lab.server.path("/etc/rancher/k3s/config.yaml")).unwrap();
    assert!(
        config.contains("write-kubeconfig-mode: \"0600\""),
        "{config}"
    );
    assert_eq!(
        lab.server
            .run_as_root_ok("stat -c %a /etc/rancher/k3s/config.yaml")
            .unwrap()
            .trim(),
        "600"
    );
    assert_eq!(
        lab.server
            .run_as_root_ok("systemctl is-active k3s")
            .unwrap()
            .trim(),
        "active"
    );
    assert!(lab
        .server
        .run_as_root_ok("dpkg-query -W -f='${db:Status-Abbrev}' open-iscsi")
        .unwrap()
        .starts_with("ii"));
    let journal = std::fs::read_to_string(lab.server.path("/var/lib/rebox/journal.json")).unwrap();
    assert!(journal.contains("k3s-running"), "{journal}");

    // Real kubectl on the server sees the Ready node the k3s stand-in registered.
    let nodes = lab
        .server
        .run_as_root_ok("KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl get nodes -o jsonpath='{.items[*].status.conditions[?(@.type==\"Ready\")].status}'")
        .unwrap();
    assert_eq!(nodes.trim(), "True");

    // The addons went in through k3s's helm-controller: every chart's install Job completed.
    for chart in ["longhorn", "vault"] {
        let done = lab
            .server
            .run_as_root_ok(&format!(
                "KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl -n kube-system get job helm-install-{chart} -o jsonpath='{{.status.succeeded}}'"
            ))
            .unwrap();
        assert_eq!(done.trim(), "1", "chart {chart} not installed");
    }
    let pvc = lab
        .server
        .run_as_root_ok("KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl -n security get pvc vault-data-lh -o name")
        .unwrap();
    assert_eq!(pvc.trim(), "persistentvolumeclaim/vault-data-lh");

    // Vault: initialised, its key in the offline backup (0600, opened by the stock age CLI),
    // the same key in the Secret the CronJob reads, and unsealed (vault-0 Ready).
    let backup = lab.backup_path();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (id, _) = lab.age_identity();
    let plain = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&id)
        .arg(&backup)
        .output()
        .unwrap();
    assert!(
        plain.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let doc = String::from_utf8(plain.stdout).unwrap();
    let share = doc
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("key = \"")
                .and_then(|r| r.strip_suffix('"'))
        })
        .expect("a share in the backup")
        .to_string();
    // No root token, nor any other extra: rebox revoked init's token once Vault was set up
    // for ESO, and never writes a token anywhere.
    let parsed: toml::Value = toml::from_str(&doc).unwrap();
    assert!(
        parsed
            .get("extra")
            .and_then(|x| x.as_array())
            .is_none_or(|x| x.is_empty()),
        "the fresh backup carries extras: {:?}",
        parsed.get("extra").map(|x| x.to_string().len())
    );
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
    let ready = lab.kubectl("-n security get pod vault-0 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'");
    assert_eq!(ready.trim(), "True", "Vault is not unsealed");
    // Init's root token was revoked once Vault was set up for ESO: no root token is left
    // (checked with auth/token/accessors and lookup-accessor), and the record is empty.
    let shares = common::backup_shares_of(&parsed);
    assert_eq!(
        lab.live_root_tokens(&shares),
        Vec::<String>::new(),
        "a root token outlived the rebuild"
    );
    assert_eq!(lab.root_token_record(), serde_json::json!([]));

    // ESO's store Ready, Argo CD's root Application synced, both CronJobs in place.
    let store = lab.kubectl("get clustersecretstore k8s-secrets -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'");
    assert_eq!(store.trim(), "True", "the ClusterSecretStore is not Ready");
    let app = lab.kubectl("-n argocd get application root -o jsonpath='{.status.sync.status}/{.status.health.status}'",
    );
    assert_eq!(app.trim(), "Synced/Healthy");
    let cronjobs = lab.kubectl("-n security get cronjobs -o name");
    for cj in [
        "cronjob.batch/vault-auto-unseal",
        "cronjob.batch/eso-recovery",
    ] {
        assert!(
            cronjobs.lines().any(|l| l.trim() == cj),
            "{cj} missing: {cronjobs}"
        );
    }
    assert!(stdout.contains("What to do next"), "{stdout}");
    assert!(stdout.contains("store the offline backup"), "{stdout}");

    // A second run finds everything done (the guard always checks).
    let out = rebuild(&lab, &bundle, &[]).success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert_eq!(stdout.matches("already done").count(), 19, "{stdout}");

    // The CronJobs do their work on the node. Suspended first, so that only the Jobs made here
    // from them act (their schedules would otherwise race the test).
    for cj in ["vault-auto-unseal", "eso-recovery"] {
        lab.kubectl(&format!(
            "-n security patch cronjob {cj} --type=merge -p '{{\"spec\":{{\"suspend\":true}}}}'"
        ));
    }
    // Vault sealed as a crash leaves it (bao killed, started again sealed): vault-0 goes
    // unready, the store degraded.
    lab.server.run_as_root_ok(&common::restart_vault()).unwrap();
    lab.kubectl("-n security wait --for=condition=Ready=false pod/vault-0 --timeout=60s");
    lab.kubectl("wait --for=condition=Ready=false clustersecretstore/k8s-secrets --timeout=60s");

    // auto-unseal, from its CronJob: Vault unsealed with the key from the Secret.
    run_job(&lab, "unseal-now", "vault-auto-unseal");
    lab.kubectl("-n security wait --for=condition=Ready pod/vault-0 --timeout=60s");

    // The store stays degraded with Vault back (as ESO does until it re-validates).
    std::thread::sleep(Duration::from_secs(2));
    let store = lab.kubectl("get clustersecretstore k8s-secrets -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'");
    assert_eq!(
        store.trim(),
        "False",
        "the store recovered without ESO restarting"
    );
    // eso-recovery, from its CronJob: ESO restarted, the store Ready again.
    run_job(&lab, "recover-now", "eso-recovery");
    lab.kubectl("wait --for=condition=Ready clustersecretstore/k8s-secrets --timeout=60s");
    for d in [
        "external-secrets",
        "external-secrets-webhook",
        "external-secrets-cert-controller",
    ] {
        let at = lab.kubectl(&format!("-n security get deployment {d} -o jsonpath='{{.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}}'"),
        );
        assert!(!at.trim().is_empty(), "{d} was not restarted");
    }
}

/// `kubectl create job NAME --from=cronjob/CRONJOB` in `security`, waited for; its log on failure.
fn run_job(lab: &Lab, name: &str, cronjob: &str) {
    lab.kubectl(&format!(
        "-n security create job {name} --from=cronjob/{cronjob}"
    ));
    let waited = lab.server.run_as_root_ok(&format!(
        "KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl -n security wait --for=condition=complete --timeout=60s job/{name}"
    ));
    if let Err(e) = waited {
        let logs = lab
            .server
            .run_as_root_ok(&format!(
                "KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl -n security logs job/{name} 2>&1; KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl -n security get job {name} -o yaml"
            ))
            .unwrap_or_else(|e| format!("(no logs: {e:#})"));
        panic!("Job {name} from {cronjob} did not complete: {e:#}\n{logs}");
    }
    let log = lab.kubectl(&format!("-n security logs job/{name}"));
    eprintln!("{name}: {log}");
}

#[test]
fn rebuild_refuses_a_k3s_binary_whose_checksum_does_not_match() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    // One flipped byte in the binary on the stick.
    let mut bytes = std::fs::read(bundle.join("k3s")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(bundle.join("k3s"), bytes).unwrap();
    let out = rebuild(&lab, &bundle, &[]).failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("checksum mismatch") && stderr.contains("Nothing was sent"),
        "{stderr}"
    );
    assert!(!lab.server.path("/usr/local/bin/k3s").exists());
    assert!(
        !lab.server.path("/var/lib/rebox/journal.json").exists(),
        "the server was touched"
    );
}

#[test]
fn rebuild_refuses_an_existing_k3s_without_force() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    lab.server
        .run_as_root_ok("mkdir -p /etc/rancher/k3s && echo old > /etc/rancher/k3s/k3s.yaml")
        .unwrap();
    let out = rebuild(&lab, &bundle, &[]).failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("already has k3s") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(
        !lab.server.path("/usr/local/bin/k3s").exists(),
        "the rebuild went on"
    );
    rebuild(&lab, &bundle, &["--force"]).success();
}

#[test]
fn rebuild_killed_mid_upload_resumes_and_completes() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    let staging = lab.server.path("/home/homelab/.cache/rebox/uploads");
    let mut child = rebuild_cmd(&lab, &bundle, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill the laptop side once part of the k3s binary is on the server.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let partial = std::fs::read_dir(&staging)
            .map(|d| {
                d.flatten()
                    .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                    .sum::<u64>()
            })
            .unwrap_or(0);
        if partial > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the upload never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "rebox finished before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !lab.server.path("/usr/local/bin/k3s").exists(),
        "a partial binary reached its place"
    );

    let out = rebuild(&lab, &bundle, &[]).success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("resuming rebuild"), "{stderr}");
    assert_eq!(
        sha256_hex(&lab.server.path("/usr/local/bin/k3s")),
        sha256_hex(&bundle.join("k3s"))
    );
    assert_eq!(
        lab.server
            .run_as_root_ok("systemctl is-active k3s")
            .unwrap()
            .trim(),
        "active"
    );
}

#[test]
fn rebuild_never_initialises_a_vault_that_already_holds_data() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    rebuild(&lab, &bundle, &[]).success();
    // Without its backup file, the initialised Vault is someone else's as far as rebox knows.
    let moved = lab.dir.path().join("elsewhere.age");
    std::fs::rename(lab.backup_path(), &moved).unwrap();
    let out = rebuild(&lab, &bundle, &[]).failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("already initialised") && stderr.contains("refusing"),
        "{stderr}"
    );
    assert!(
        !lab.backup_path().exists(),
        "a new backup was written for an old Vault"
    );
    // Vault itself was left alone: still unsealed with the original key.
    let ready = lab.kubectl("-n security get pod vault-0 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'");
    assert_eq!(ready.trim(), "True");
}

#[test]
fn rebuild_checks_the_backup_identity_before_initialising_vault() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    // A recipient whose private key the operator does not pass: the backup could never be read.
    let stranger = lab.dir.path().join("stranger.age");
    assert!(std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&stranger)
        .output()
        .unwrap()
        .status
        .success());
    let public = String::from_utf8(
        std::process::Command::new("age-keygen")
            .arg("-y")
            .arg(&stranger)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let (mine, _) = lab.age_identity();
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("rebox"));
    cmd.env("HOME", lab.dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .arg("--config")
        .arg(lab.dir.path().join("rebox.toml"))
        .args(["--yes", "rebuild"])
        .args(lab.conn_args())
        .arg("--bundle")
        .arg(&bundle)
        .arg("--key-out")
        .arg(lab.backup_path())
        .args(["--key-recipient", public.trim()])
        .arg("--key-identity")
        .arg(&mine);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--key-identity"), "{stderr}");
    assert!(!lab.backup_path().exists());
    // Vault was never initialised: the phase stopped before Vault's init.
    let ip = lab.kubectl("-n security get svc vault -o jsonpath='{.spec.clusterIP}'");
    let status = lab
        .server
        .run_as_root_ok(&format!(
            "curl -fsS http://{}:8200/v1/sys/seal-status",
            ip.trim()
        ))
        .unwrap();
    assert!(status.contains("\"initialized\":false"), "{status}");
}

/// No root token outlives the run that made it: a rebuild killed after Vault was set up for
/// ESO but before init's root token was revoked leaves the token's accessor in the record on
/// the server; `rebox plan` then makes no token, no TokenRequest and writes nothing; the
/// rerun revokes the leftover (proven with lookup-accessor) and says so.
#[test]
fn rebuild_killed_before_the_root_token_is_revoked_is_cleaned_up_by_the_rerun() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    let out = rebuild_cmd(&lab, &bundle, &[])
        .env("REBOX_FAILPOINT_EXIT_AFTER", "vault-for-eso:set-up")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(86), "{}", describe(&out));
    let record = lab.root_token_record();
    let entries = record.as_array().expect("a record on the server");
    assert_eq!(entries.len(), 1, "{record}");
    assert_eq!(entries[0]["minted_by"], "init", "{record}");
    let accessor = entries[0]["accessor"]
        .as_str()
        .expect("its accessor")
        .to_string();
    let shares = common::backup_shares_of(&lab.decrypted_backup(&lab.backup_path()));
    assert_eq!(lab.live_root_tokens(&shares), vec![accessor.clone()]);

    // A plan in this state (the phase still to do) makes nothing.
    let requests_before = lab.token_requests();
    let plan = lab
        .rebox_with_keys(&["--json", "plan"], &bundle)
        .output()
        .unwrap();
    assert!(plan.status.success(), "plan: {}", describe(&plan));
    let planned: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let phase = planned
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "vault-for-eso")
        .expect("the phase in the plan");
    assert_eq!(phase["pending"], true, "{phase}");
    assert_eq!(
        lab.token_requests(),
        requests_before,
        "plan made a TokenRequest"
    );
    assert_eq!(lab.root_token_record(), record, "plan changed the record");
    assert_eq!(
        lab.live_root_tokens(&shares),
        vec![accessor.clone()],
        "plan made or revoked a root token"
    );

    let out = rebuild_cmd(&lab, &bundle, &[]).output().unwrap();
    assert!(out.status.success(), "rerun: {}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("revoked a root token an earlier run left (init at")
            && stderr.contains(&accessor),
        "{stderr}"
    );
    assert_eq!(
        lab.live_root_tokens(&shares),
        Vec::<String>::new(),
        "the leftover root token (or the rerun's own) is still valid"
    );
    assert_eq!(lab.root_token_record(), serde_json::json!([]));
}

/// A busy or briefly failing API server does not stop a rebuild (issue 26, item 8): writes
/// answered 409 or 500 are applied again with backoff, and the run says so (429 and 503
/// kube-client's own retry policy already takes).
#[test]
fn rebuild_retries_writes_the_api_server_refuses_for_a_moment() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    // lab-k3s reads its fault switches on every request (rebox_lab::k3s::faults).
    lab.server
        .run_as_root_ok(r#"mkdir -p /var/lib/rancher/k3s && cat > /var/lib/rancher/k3s/lab-faults.json <<'JSON'
{"api": [
  {"method": "PATCH", "path": "/api/v1/namespaces/security", "status": 429, "times": 2},
  {"method": "PATCH", "path": "/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts/longhorn", "status": 500, "times": 2},
  {"method": "PATCH", "path": "/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts/vault", "status": 409, "times": 1}
]}
JSON"#)
        .unwrap();
    let out = rebuild_cmd(&lab, &bundle, &[]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the API server refused applying HelmChart kube-system/vault for now (409")
            && stderr.contains(
                "the API server refused applying HelmChart kube-system/longhorn for now (500"
            ),
        "{stderr}"
    );
    // Every rule was met (lab-k3s removes a rule at zero, and the file with its last rule).
    let left = std::fs::read_to_string(lab.server.path("/var/lib/rancher/k3s/lab-faults.json"))
        .unwrap_or_default();
    assert!(
        !left.contains("\"status\""),
        "not every refusal was met: {left}"
    );
}
