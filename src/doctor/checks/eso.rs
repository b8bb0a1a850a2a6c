//! External Secrets: the ClusterSecretStore (Ready once it validates against an unsealed
//! Vault) and the ExternalSecrets that sync through it.

use super::{check, dyn_name, kubectl, ready_condition, str_of, unreadable};
use crate::config::Config;
use crate::doctor::snapshot::Snapshot;
use crate::doctor::{Action, Check, Verdict};
use crate::site::EsoLogin;

pub(super) fn secret_store(config: &Config, s: &Snapshot) -> Check {
    const T: &str = "ClusterSecretStore";
    let e = &config.eso;
    let stores = match &s.stores {
        Ok(v) => v,
        Err(err) => return unreadable("secret-store", T, s, "the ClusterSecretStores", err),
    };
    let Some(store) = stores.iter().find(|o| dyn_name(o) == e.store) else {
        return check(
            "secret-store",
            T,
            Verdict::Fail,
            format!("{} does not exist", e.store),
        )
        .with_fix(
            "the rebuild creates it; rerun it",
            vec!["rebox rebuild".into()],
            None,
        );
    };
    let cond = ready_condition(store);
    let since = cond
        .and_then(|c| c["lastTransitionTime"].as_str())
        .map(|t| format!(" since {t}"))
        .unwrap_or_default();
    if cond.is_some_and(|c| c["status"] == "True") {
        return check(
            "secret-store",
            T,
            Verdict::Ok,
            format!("{} Ready{since}", e.store),
        );
    }
    let (reason, message) = cond
        .map(|c| (str_of(&c["reason"], "?"), str_of(&c["message"], "")))
        .unwrap_or(("no Ready condition yet", "is ESO running?"));
    let evidence = vec![format!(
        "condition Ready: {} ({reason}){since}: {message}",
        cond.map(|c| str_of(&c["status"], "?")).unwrap_or("-")
    )];
    if let Some(Ok(EsoLogin::Refused(why))) = &s.eso_login {
        return check(
            "secret-store",
            T,
            Verdict::Fail,
            format!("{} degraded: Vault refuses ESO's login", e.store),
        )
        .with_evidence(vec![
            evidence[0].clone(),
            format!(
                "login to auth/{} as role {} with service account {}/{}: {why}",
                e.vault_auth_mount, e.vault_role, e.namespace, e.service_account
            ),
        ])
        .with_fix(
            "Vault's Kubernetes auth does not accept ESO (missing, pinned to another cluster's CA or token, or its role not bound to ESO's service account): set what is wrong up again in-cluster with a short-lived root token from the unseal key, revoked at once, then restart ESO",
            vec![
                "bao operator generate-root -init   # then the unseal key, then -decode (or `vault operator …`)".into(),
                format!(
                    "bao write auth/{}/config kubernetes_host={}",
                    e.vault_auth_mount,
                    crate::site::eso_auth::KUBERNETES_HOST
                ),
                format!(
                    "bao write auth/{}/role/{} bound_service_account_names={} bound_service_account_namespaces={} token_policies={}",
                    e.vault_auth_mount, e.vault_role, e.service_account, e.namespace, e.vault_role
                ),
                "bao token revoke -self".into(),
            ],
            Some(Action::ReadyVaultForEso),
        );
    }
    let sealed = s.vault.as_ref().is_ok_and(|v| v.sealed) || s.vault.is_err();
    let deployments = e.deployments.join(" ");
    let text = if sealed {
        "the store validates against Vault: unseal Vault first; ESO then re-validates only every few minutes, so rollout-restart its three Deployments and wait".to_string()
    } else {
        "Vault is unsealed but ESO has not re-validated the store (it does every few minutes): rollout-restart its three Deployments and wait".to_string()
    };
    check(
        "secret-store",
        T,
        Verdict::Fail,
        format!("{} not Ready ({reason}: {message})", e.store),
    )
    .with_evidence(evidence)
    .with_fix(
        text,
        vec![
            kubectl(format!(
                "-n {} rollout restart deployment {deployments}",
                e.namespace
            )),
            kubectl(format!(
                "-n {} rollout status deployment {deployments}",
                e.namespace
            )),
            kubectl(format!("get clustersecretstore {}", e.store)),
        ],
        Some(Action::RestartEso),
    )
}

pub(super) fn external_secrets(s: &Snapshot) -> Check {
    const T: &str = "ExternalSecrets";
    let list = match &s.external_secrets {
        Ok(v) => v,
        Err(e) => return unreadable("external-secrets", T, s, "the ExternalSecrets", e),
    };
    if list.is_empty() {
        return check("external-secrets", T, Verdict::Ok, "none defined".into());
    }
    let failing: Vec<String> = list
        .iter()
        .filter(|o| !ready_condition(o).is_some_and(|c| c["status"] == "True"))
        .map(|o| {
            format!(
                "{}/{}: {}",
                o.metadata.namespace.as_deref().unwrap_or("?"),
                dyn_name(o),
                ready_condition(o)
                    .map(|c| str_of(&c["message"], "not synced").to_string())
                    .unwrap_or_else(|| "not synced yet".into())
            )
        })
        .collect();
    let synced = list.len() - failing.len();
    if failing.is_empty() {
        return check(
            "external-secrets",
            T,
            Verdict::Ok,
            format!("{synced}/{} synced", list.len()),
        );
    }
    let first = failing[0].split(':').next().unwrap_or_default().to_string();
    let (fns, fname) = first.split_once('/').unwrap_or(("NS", "NAME"));
    check(
        "external-secrets",
        T,
        Verdict::Fail,
        format!("{synced}/{} synced; failing: {}", list.len(), failing.iter().map(|f| f.split(':').next().unwrap_or_default()).collect::<Vec<_>>().join(", ")),
    )
    .with_evidence(failing.clone())
    .with_fix(
        "they sync once the ClusterSecretStore is Ready (see its check); a missing key in Vault is fixed in Vault; to sync one at once:",
        vec![kubectl(format!(
            "-n {fns} annotate externalsecret {fname} force-sync=$(date +%s) --overwrite"
        ))],
        None,
    )
}
