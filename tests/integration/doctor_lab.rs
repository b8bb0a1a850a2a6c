//! `rebox doctor [--fix]` against lab servers: each of the recovery guide's scenarios is made
//! with real kubectl (or the lab's fault switches), then doctor must name it with the right
//! evidence, `--fix` must repair it, and doctor must then give a clean bill of health.

use crate::{common, doctor_support};
use doctor_support::*;

#[test]
fn doctor_gives_a_healthy_lab_a_clean_bill() {
    // CronJobs 60× faster, so both have run once before the check.
    let (lab, _) = healthy_lab(60);
    for cj in ["vault-auto-unseal", "eso-recovery"] {
        wait_until(&format!("a successful run of {cj}"), 60, || {
            !kubectl(
                &lab,
                &format!(
                    "-n security get cronjob {cj} -o jsonpath='{{.status.lastSuccessfulTime}}'"
                ),
            )
            .trim()
            .is_empty()
        });
    }
    let (code, report, stderr) = doctor(&lab, &[]);
    assert_clean(&report);
    assert_eq!(code, 0, "{stderr}");
    // The Secret is reported by its key and share count, never its value.
    let secret = all_text(&report, "unseal-secret");
    assert!(secret.contains("holds 1 share(s)"), "{secret}");
    let value = kubectl(
        &lab,
        "-n security get secret vault-unseal-key -o jsonpath='{.data.key}'",
    );
    assert!(
        !report.to_string().contains(value.trim()),
        "the Secret's value is in the report"
    );
    // The human report says so too.
    let out = lab
        .rebox()
        .arg("doctor")
        .args(lab.conn_args())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("Clean bill of health"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn doctor_vault_sealed_with_the_unseal_cronjob_suspended_is_named_and_fixed() {
    let (lab, _) = healthy_lab(1);
    suspend(&lab, "vault-auto-unseal", true);
    seal(&lab);

    let (code, report, _) = doctor(&lab, &[]);
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(verdict(&report, "vault"), "fail");
    let vault = all_text(&report, "vault");
    assert!(vault.contains("sealed (0 of 1 share(s) given)"), "{vault}");
    assert!(vault.contains("\"kind\":\"unseal\""), "{vault}");
    assert_eq!(verdict(&report, "unseal-cronjob"), "fail");
    let cj = all_text(&report, "unseal-cronjob");
    assert!(
        cj.contains("suspended while Vault is sealed") && cj.contains("SUSPENDED"),
        "{cj}"
    );
    assert_eq!(verdict(&report, "vault-pod"), "warn");
    assert!(
        all_text(&report, "vault-pod").contains("Ready=False"),
        "{report:#}"
    );
    // The rest of the evidence is fine: the key is there, the volume attached.
    assert_eq!(verdict(&report, "unseal-secret"), "ok");
    assert_eq!(verdict(&report, "vault-pvc"), "ok");

    let (code, fixed, stderr) = doctor_fix(&lab, &[]);
    assert_eq!(
        fix(&fixed, "unseal")["result"],
        "applied",
        "{fixed:#}\n{stderr}"
    );
    assert!(fix(&fixed, "unseal")["message"]
        .as_str()
        .unwrap()
        .contains("Secret security/vault-unseal-key"));
    assert_eq!(
        fix(&fixed, "resume-cron-job")["result"],
        "applied",
        "{fixed:#}"
    );
    assert!(stderr.contains("unseal progress 1/1"), "{stderr}");
    assert_eq!(code, 0, "{fixed:#}\n{stderr}");
    let ready = kubectl(&lab, "-n security get pod vault-0 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'");
    assert_eq!(ready.trim(), "True");
    let suspended = kubectl(
        &lab,
        "-n security get cronjob vault-auto-unseal -o jsonpath='{.spec.suspend}'",
    );
    assert_eq!(suspended.trim(), "false");

    let (code, report, _) = doctor(&lab, &[]);
    assert_clean(&report);
    assert_eq!(code, 0);
}

#[test]
fn doctor_store_degraded_after_vault_came_back_is_fixed_by_restarting_eso() {
    let (lab, _) = healthy_lab(1);
    // Both self-healing CronJobs off: the store must stay degraded for doctor to see it.
    suspend(&lab, "vault-auto-unseal", true);
    suspend(&lab, "eso-recovery", true);
    seal(&lab);
    kubectl(
        &lab,
        "wait --for=condition=Ready=false clustersecretstore/k8s-secrets --timeout=60s",
    );
    // Vault comes back (by hand, through rebox), the store does not.
    let out = lab
        .rebox()
        .arg("unseal")
        .arg("--ssh-identity")
        .arg(lab.server.client_key())
        .arg("--known-hosts")
        .arg(lab.known_hosts())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    kubectl(
        &lab,
        "-n security wait --for=condition=Ready pod/vault-0 --timeout=60s",
    );

    let (code, report, _) = doctor(&lab, &[]);
    assert_eq!(code, 2);
    assert_eq!(verdict(&report, "vault"), "ok");
    assert_eq!(verdict(&report, "secret-store"), "fail");
    let store = all_text(&report, "secret-store");
    assert!(
        store.contains("ValidationFailed") && store.contains("Vault is sealed"),
        "{store}"
    );
    assert!(store.contains("rollout restart deployment external-secrets external-secrets-webhook external-secrets-cert-controller"), "{store}");
    assert!(store.contains("\"kind\":\"restart-eso\""), "{store}");
    assert_eq!(verdict(&report, "eso-recovery-cronjob"), "warn");

    let (code, fixed, stderr) = doctor_fix(&lab, &[]);
    assert_eq!(
        fix(&fixed, "restart-eso")["result"],
        "applied",
        "{fixed:#}\n{stderr}"
    );
    assert_eq!(fix(&fixed, "restart-eso")["verdict_after"], "ok");
    assert_eq!(code, 0, "{fixed:#}\n{stderr}");
    for d in [
        "external-secrets",
        "external-secrets-webhook",
        "external-secrets-cert-controller",
    ] {
        let at = kubectl(&lab, &format!("-n security get deployment {d} -o jsonpath='{{.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}}'"));
        assert!(!at.trim().is_empty(), "{d} was not restarted");
    }
    let (code, report, _) = doctor(&lab, &[]);
    assert_clean(&report);
    assert_eq!(code, 0);
}

#[test]
fn doctor_argocd_app_stuck_out_of_sync_is_hard_refreshed() {
    let (lab, _) = healthy_lab(1);
    // Argo CD's cached manifests go stale: the root app is OutOfSync until a hard refresh.
    set_faults(&lab, r#"{"argocdStaleUntilHardRefresh": ["root"]}"#);
    wait_until("root OutOfSync", 30, || {
        kubectl(
            &lab,
            "-n argocd get application root -o jsonpath='{.status.sync.status}'",
        )
        .trim()
            == "OutOfSync"
    });
    let (code, report, _) = doctor(&lab, &[]);
    assert_eq!(code, 2);
    assert_eq!(verdict(&report, "argocd-apps"), "fail");
    let apps = all_text(&report, "argocd-apps");
    assert!(
        apps.contains("not: root") && apps.contains("sync OutOfSync"),
        "{apps}"
    );
    assert!(apps.contains("ComparisonError: rpc error"), "{apps}");
    assert!(apps.contains("argocd.argoproj.io/refresh=hard"), "{apps}");

    let (code, fixed, stderr) = doctor_fix(&lab, &[]);
    let refresh = fix(&fixed, "refresh-apps");
    assert_eq!(refresh["result"], "applied", "{fixed:#}\n{stderr}");
    assert_eq!(refresh["action"]["apps"][0], "root");
    assert_eq!(code, 0, "{fixed:#}\n{stderr}");
    let app = kubectl(&lab, "-n argocd get application root -o jsonpath='{.status.sync.status}/{.status.health.status}'");
    assert_eq!(app.trim(), "Synced/Healthy");
    let (_, report, _) = doctor(&lab, &[]);
    assert_clean(&report);

    // An app whose sync really fails: the refresh is done but cannot help, and doctor says so.
    set_faults(&lab, r#"{"argocdOutOfSync": ["root"]}"#);
    wait_until("root OutOfSync again", 30, || {
        kubectl(
            &lab,
            "-n argocd get application root -o jsonpath='{.status.sync.status}'",
        )
        .trim()
            == "OutOfSync"
    });
    let (code, fixed, _) = doctor_fix(&lab, &[]);
    assert_eq!(code, 2);
    let refresh = fix(&fixed, "refresh-apps");
    assert_eq!(refresh["result"], "failed");
    let msg = refresh["message"].as_str().unwrap();
    assert!(
        msg.contains("still not Synced and Healthy") && msg.contains("argocdOutOfSync"),
        "{msg}"
    );
}

#[test]
fn doctor_missing_unseal_secret_is_recreated_from_the_offline_backup() {
    let (lab, _) = healthy_lab(1);
    // The Secret is gone and Vault sealed: the CronJob's Job cannot unseal it.
    kubectl(&lab, "-n security delete secret vault-unseal-key");
    seal(&lab);
    kubectl(
        &lab,
        "-n security create job unseal-now --from=cronjob/vault-auto-unseal",
    );
    kubectl(
        &lab,
        "-n security wait --for=condition=failed job/unseal-now --timeout=60s",
    );

    let (code, report, _) = doctor(&lab, &[]);
    assert_eq!(code, 2);
    assert_eq!(verdict(&report, "unseal-secret"), "fail");
    let s = all_text(&report, "unseal-secret");
    assert!(
        s.contains("Secret security/vault-unseal-key does not exist"),
        "{s}"
    );
    assert!(s.contains("\"kind\":\"recreate-secret\""), "{s}");
    // The failed run, with its log tail as evidence.
    assert_eq!(verdict(&report, "unseal-cronjob"), "fail");
    let cj = all_text(&report, "unseal-cronjob");
    assert!(cj.contains("failed") && cj.contains("log of Job"), "{cj}");
    assert!(
        cj.contains("secret \\\"vault-unseal-key\\\" not found"),
        "{cj}"
    );
    let v = all_text(&report, "vault");
    assert!(
        v.contains("from the offline backup (Secret security/vault-unseal-key is missing)"),
        "{v}"
    );

    // Without the backup --fix cannot do it, and says what to pass.
    let (code, fixed, _) = doctor_fix(&lab, &[]);
    assert_eq!(code, 2);
    let f = fix(&fixed, "recreate-secret");
    assert_eq!(f["result"], "failed");
    assert!(f["message"].as_str().unwrap().contains("--from"), "{f}");
    assert_eq!(fix(&fixed, "unseal")["result"], "failed");

    // With it, the Secret comes back with the backup's key, proven by unsealing Vault.
    let (code, fixed, stderr) = doctor_fix_with_backup(&lab);
    let f = fix(&fixed, "recreate-secret");
    assert_eq!(f["result"], "applied", "{fixed:#}\n{stderr}");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("the key unsealed Vault"),
        "{f}"
    );
    assert_eq!(fix(&fixed, "unseal")["result"], "skipped", "{fixed:#}");
    assert_eq!(
        fix(&fixed, "run-cron-job")["result"],
        "applied",
        "{fixed:#}"
    );
    assert_eq!(code, 0, "{fixed:#}\n{stderr}");
    let (_, report, _) = doctor(&lab, &[]);
    assert_clean(&report);
    // The recreated Secret unseals Vault the next time.
    suspend(&lab, "vault-auto-unseal", true);
    seal(&lab);
    let (code, fixed, stderr) = doctor_fix(&lab, &[]);
    assert!(
        fix(&fixed, "unseal")["message"]
            .as_str()
            .unwrap()
            .contains("Secret"),
        "{stderr}"
    );
    assert_eq!(code, 0, "{fixed:#}\n{stderr}");
}

#[test]
fn doctor_unbound_vault_pvc_is_named_and_rebound_to_its_volume() {
    let (lab, _) = healthy_lab(1);
    let pv = kubectl(
        &lab,
        "-n security get pvc vault-data-lh -o jsonpath='{.spec.volumeName}'",
    );
    let pv = pv.trim().to_string();
    // The claim deleted and recreated by hand (e.g. a botched restore): the Released PV still
    // names the old claim's uid, so the new one stays Pending.
    kubectl(&lab, "-n security delete pvc vault-data-lh --wait=false");
    wait_until("the old PVC gone", 30, || {
        kubectl(&lab, "-n security get pvc -o name")
            .trim()
            .is_empty()
    });
    lab.server
        .run_as_root_ok(&format!(
            "KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl apply -f - <<'YAML'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: vault-data-lh, namespace: security}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: longhorn
  volumeName: {pv}
  resources: {{requests: {{storage: 10Gi}}}}
YAML"
        ))
        .unwrap();
    wait_until("the PV Released", 30, || {
        kubectl(
            &lab,
            &format!("get pv {pv} -o jsonpath='{{.status.phase}}'"),
        )
        .trim()
            == "Released"
    });
    let (code, report, _) = doctor(&lab, &[]);
    assert_eq!(code, 2);
    assert_eq!(verdict(&report, "vault-pvc"), "fail");
    let p = all_text(&report, "vault-pvc");
    assert!(p.contains("vault-data-lh is Pending, not Bound"), "{p}");
    assert!(
        p.contains(&format!("PersistentVolume {pv}: phase Released")),
        "{p}"
    );
    assert!(p.contains("\"kind\":\"rebind-volume\""), "{p}");

    let (code, fixed, stderr) = doctor_fix(&lab, &[]);
    assert_eq!(
        fix(&fixed, "rebind-volume")["result"],
        "applied",
        "{fixed:#}\n{stderr}"
    );
    assert_eq!(code, 0, "{fixed:#}\n{stderr}");
    let phase = kubectl(
        &lab,
        "-n security get pvc vault-data-lh -o jsonpath='{.status.phase}/{.spec.volumeName}'",
    );
    assert_eq!(phase.trim(), format!("Bound/{pv}"));
    let (_, report, _) = doctor(&lab, &[]);
    assert_clean(&report);
}

/// Scenario 3 with another cause: Vault's Kubernetes auth no longer accepts ESO (here its
/// role was rewritten for another service account, as a hand edit does). Doctor names "Vault
/// refuses ESO's login" with the store's condition and Vault's answer as evidence; restarting
/// ESO cannot help; --fix sets Vault up again with a root token from the offline backup's key,
/// revoked at once, and the store turns Ready.
#[test]
fn doctor_vault_refusing_esos_login_is_named_and_set_up_again() {
    let (lab, _) = healthy_lab(1);
    suspend(&lab, "eso-recovery", true);
    let shares = common::backup_shares_of(&lab.decrypted_backup(&lab.backup_path()));
    let broken = lab.as_vault_root(
        &shares,
        &serde_json::json!([["POST", "/v1/auth/kubernetes/role/external-secrets",
            {"bound_service_account_names": ["someone-else"],
             "bound_service_account_namespaces": ["security"],
             "token_policies": ["external-secrets"]}]]),
    );
    assert_eq!(broken[0][0], 204, "{broken}");
    // ESO validates its store again when it restarts: the login is refused.
    kubectl(
        &lab,
        "-n security rollout restart deployment external-secrets external-secrets-webhook external-secrets-cert-controller",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while kubectl(&lab, "get clustersecretstore k8s-secrets -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].reason}'")
        .trim()
        != "InvalidProviderConfig"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the store did not degrade: {}\n--- lab-k3s log\n{}",
            kubectl(&lab, "get clustersecretstore k8s-secrets -o yaml"),
            lab.server
                .run_as_root_ok("tail -n 30 /var/log/lab-systemd/k3s.service.log")
                .unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    let (code, report, _) = doctor(&lab, &[]);
    assert_eq!(code, 2);
    assert_eq!(verdict(&report, "secret-store"), "fail");
    let s = all_text(&report, "secret-store");
    assert!(s.contains("Vault refuses ESO's login"), "{s}");
    assert!(
        s.contains("InvalidProviderConfig") && s.contains("unable to create client"),
        "{s}"
    );
    assert!(s.contains("\"kind\":\"ready-vault-for-eso\""), "{s}");

    let (code, fixed, stderr) = doctor_fix_with_backup(&lab);
    let f = fix(&fixed, "ready-vault-for-eso");
    assert_eq!(f["result"], "applied", "{fixed:#}\n{stderr}");
    assert!(
        stderr.contains(
            "role external-secrets is not bound to service account security/external-secrets"
        ),
        "{stderr}"
    );
    assert_eq!(code, 0, "{fixed:#}\n{stderr}");
    let store = kubectl(&lab, "get clustersecretstore k8s-secrets -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'");
    assert_eq!(store.trim(), "True");
    assert_eq!(lab.live_root_tokens(&shares), Vec::<String>::new());
    let (_, report, _) = doctor(&lab, &[]);
    assert_clean(&report);
}
