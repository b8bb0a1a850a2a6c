//! Vault itself: the vault-0 pod, the seal status, and the Secret the auto-unseal CronJob
//! reads its key from (reduced to "holds N shares"; its value never reaches a check).

use k8s_openapi::api::core::v1::Pod;

use super::{check, kubectl, unreadable};
use crate::config::Config;
use crate::doctor::snapshot::Snapshot;
use crate::doctor::{Action, Check, Verdict};

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub(super) fn vault_pod(config: &Config, s: &Snapshot) -> Check {
    const T: &str = "vault-0 pod";
    let (ns, name) = (&config.vault.namespace, &config.vault.pod);
    let pods = match &s.pods {
        Ok(p) => p,
        Err(e) => return unreadable("vault-pod", T, s, "the pods", e),
    };
    let describe = kubectl(format!("-n {ns} describe pod {name}"));
    let Some(pod) = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
    else {
        return check(
            "vault-pod",
            T,
            Verdict::Fail,
            format!("pod {ns}/{name} does not exist"),
        )
        .with_fix(
            "the Vault StatefulSet creates it; look at the StatefulSet's events",
            vec![kubectl(format!("-n {ns} describe statefulset vault"))],
            None,
        );
    };
    let status = pod.status.as_ref();
    let phase = status
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    let mut evidence = vec![format!("phase {phase}")];
    for c in status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        if c.status != "True" {
            evidence.push(format!(
                "{}={}{}",
                c.type_,
                c.status,
                c.message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
    }
    match phase.as_str() {
        "Running" if pod_ready(pod) => {
            check("vault-pod", T, Verdict::Ok, "Running, Ready (Vault unsealed)".into()).with_evidence(evidence)
        }
        "Running" => check(
            "vault-pod",
            T,
            Verdict::Warn,
            "Running, not Ready: its readiness probe is `vault status`, which fails while Vault is sealed".into(),
        )
        .with_evidence(evidence)
        .with_fix("see the Vault check: unsealing makes it Ready", vec![], None),
        _ => {
            let why = status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled" && c.status != "True"))
                .and_then(|c| c.message.clone())
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            check("vault-pod", T, Verdict::Fail, format!("{phase}{why}"))
                .with_evidence(evidence)
                .with_fix(
                    format!("a Pending vault-0 usually waits for its volume: see the check of PVC {}", config.vault.pvc),
                    vec![describe],
                    None,
                )
        }
    }
}

pub(super) fn vault(config: &Config, s: &Snapshot) -> Check {
    const T: &str = "Vault";
    let v = &config.vault;
    let st = match &s.vault {
        Ok(st) => st,
        Err(e) if s.api.is_err() => {
            return check("vault", T, Verdict::Skip, format!("not checked: the k3s API does not answer ({e})"))
        }
        Err(e) => {
            return check("vault", T, Verdict::Fail, format!("cannot read its seal status: {e}"))
                .with_fix(
                    format!("Vault answers once vault-0 runs (see the vault-0 check); its Service is {}/{} port {}", v.namespace, v.service, v.port),
                    vec![kubectl(format!("-n {} describe pod {}", v.namespace, v.pod))],
                    None,
                )
        }
    };
    let evidence = vec![format!(
        "seal-status: initialized {}, sealed {}, threshold {} of {} share(s), progress {}, version {}",
        st.initialized, st.sealed, st.threshold, st.shares, st.progress, st.version
    )];
    if !st.initialized {
        return check("vault", T, Verdict::Fail, "not initialised".into())
            .with_evidence(evidence)
            .with_fix(
                "a Vault without data: a fresh rebuild initialises it; a destroyed node restores its volume from the NAS",
                vec!["rebox rebuild".into(), "rebox rebuild --restore-from-nas".into()],
                None,
            );
    }
    if st.sealed {
        return check(
            "vault",
            T,
            Verdict::Fail,
            format!("sealed ({} of {} share(s) given)", st.progress, st.threshold),
        )
        .with_evidence(evidence)
        .with_fix(
            if matches!(s.secret, Ok(None)) {
                format!(
                    "unseal it through the SSH tunnel with the key from the offline backup (Secret {}/{} is missing)",
                    v.namespace, v.unseal_secret
                )
            } else {
                format!(
                    "unseal it through the SSH tunnel with the key from Secret {}/{}, or from the offline backup",
                    v.namespace, v.unseal_secret
                )
            },
            vec![
                "rebox unseal".into(),
                "rebox unseal --from vault-key.age -i IDENTITY".into(),
            ],
            Some(Action::Unseal),
        );
    }
    check(
        "vault",
        T,
        Verdict::Ok,
        format!(
            "unsealed ({} of {} share(s) to unseal)",
            st.threshold, st.shares
        ),
    )
    .with_evidence(evidence)
}

pub(super) fn unseal_secret(config: &Config, s: &Snapshot) -> Check {
    const T: &str = "unseal key Secret";
    let v = &config.vault;
    let what = format!("Secret {}/{}", v.namespace, v.unseal_secret);
    let recreate = |c: Check, why: &str| {
        c.with_fix(
            format!("{why}; recreate it from the offline backup"),
            vec!["rebox doctor --fix --from vault-key.age --key-identity IDENTITY".into()],
            Some(Action::RecreateSecret),
        )
    };
    let info = match &s.secret {
        Err(e) => return unreadable("unseal-secret", T, s, &what, e),
        Ok(None) => {
            let c = check(
                "unseal-secret",
                T,
                Verdict::Fail,
                format!("{what} does not exist"),
            );
            return recreate(
                c,
                "without it the auto-unseal CronJob cannot unseal Vault after a reboot",
            );
        }
        Ok(Some(i)) => i,
    };
    let keys = format!(
        "keys present: {}",
        if info.keys.is_empty() {
            "(none)".into()
        } else {
            info.keys.join(", ")
        }
    );
    let threshold = s
        .vault
        .as_ref()
        .ok()
        .map(|v| v.threshold)
        .filter(|t| *t > 0);
    match &info.shares {
        None => {
            let c = check(
                "unseal-secret",
                T,
                Verdict::Fail,
                format!("{what} has no key `{}`", v.unseal_secret_key),
            )
            .with_evidence([keys]);
            recreate(c, "the CronJob reads that key")
        }
        Some(Err(e)) => {
            let c = check(
                "unseal-secret",
                T,
                Verdict::Fail,
                format!("{what} key `{}` {e}", v.unseal_secret_key),
            )
            .with_evidence([keys]);
            recreate(c, "the CronJob cannot use it")
        }
        Some(Ok(0)) => {
            let c = check(
                "unseal-secret",
                T,
                Verdict::Fail,
                format!("{what} key `{}` is empty", v.unseal_secret_key),
            )
            .with_evidence([keys]);
            recreate(c, "the CronJob cannot use it")
        }
        Some(Ok(n)) if threshold.is_some_and(|t| (*n as u32) < t) => {
            let t = threshold.unwrap_or_default();
            let c = check(
                "unseal-secret",
                T,
                Verdict::Fail,
                format!(
                    "{what} key `{}` holds {n} share(s), Vault needs {t}",
                    v.unseal_secret_key
                ),
            )
            .with_evidence([keys]);
            recreate(c, "the CronJob cannot unseal with too few shares")
        }
        Some(Ok(n)) => check(
            "unseal-secret",
            T,
            Verdict::Ok,
            format!(
                "{what} key `{}` holds {n} share(s) (value not shown)",
                v.unseal_secret_key
            ),
        )
        .with_evidence([keys]),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::doctor::checks::all_checks;
    use crate::doctor::checks::tests::{by_id, healthy};
    use serde_json::json;

    #[test]
    fn doctor_secret_value_never_reaches_a_check() {
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "metadata": {"name": "vault-unseal-key"},
            "data": {"key": base64_of("c2VjcmV0LXNoYXJlLXZhbHVl\n")}
        }))
        .unwrap();
        let mut s = healthy();
        s.secret = Ok(Some(crate::site::SecretInfo::from_secret(secret, "key")));
        let c = all_checks(&Config::default(), &s);
        let text = serde_json::to_string(&c).unwrap();
        assert!(!text.contains("c2VjcmV0"), "{text}");
        assert!(by_id(&c, "unseal-secret").summary.contains("1 share(s)"));
    }

    fn base64_of(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }
}
