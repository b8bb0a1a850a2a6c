//! The checks: pure functions from a [`Snapshot`] to [`Check`]s, in the order of the recovery
//! sequence (so `status --watch` reports them in the order a reboot heals them).
//!
//! `status` shows the sequence (k3s API, node, Longhorn volumes, Vault, the unseal CronJob,
//! the store, ExternalSecrets, Argo CD apps); `doctor` adds the evidence of the guide's
//! scenarios 2–4 (Vault's PVC and pod, the unseal Secret, the ESO recovery CronJob).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use serde_json::Value;

use super::snapshot::{Listed, Snapshot};
use super::{Action, Check, Fix, Verdict};
use crate::config::Config;

/// The ids `status` shows, in sequence order.
pub const STATUS_IDS: [&str; 8] = [
    "k3s-api",
    "node",
    "longhorn-volumes",
    "vault",
    "unseal-cronjob",
    "secret-store",
    "external-secrets",
    "argocd-apps",
];

/// Every check, in sequence order.
pub fn all_checks(config: &Config, s: &Snapshot) -> Vec<Check> {
    let vault_sealed = s.vault.as_ref().is_ok_and(|v| v.sealed);
    vec![
        api(s),
        node(s),
        vault_pvc(config, s),
        longhorn_volumes(config, s),
        vault_pod(config, s),
        vault(config, s),
        unseal_secret(config, s),
        cronjob(
            "unseal-cronjob",
            "unseal CronJob",
            &config.vault.namespace,
            &config.vault.unseal_cronjob,
            vault_sealed,
            "Vault will not unseal itself after the next reboot",
            s,
        ),
        secret_store(config, s),
        cronjob(
            "eso-recovery-cronjob",
            "ESO recovery CronJob",
            &config.eso.namespace,
            &config.eso.recovery_cronjob,
            false,
            "a degraded store will not recover by itself after the next reboot",
            s,
        ),
        external_secrets(s),
        argocd_apps(config, s),
    ]
}

/// The recovery sequence as `status` shows it.
pub fn status_checks(config: &Config, s: &Snapshot) -> Vec<Check> {
    all_checks(config, s)
        .into_iter()
        .filter(|c| STATUS_IDS.contains(&c.id))
        .collect()
}

// ------------------------------------------------------------------ helpers

fn check(id: &'static str, title: &'static str, verdict: Verdict, summary: String) -> Check {
    Check {
        id,
        title,
        verdict,
        summary,
        evidence: vec![],
        fix: None,
    }
}

impl Check {
    fn with_evidence(mut self, e: impl IntoIterator<Item = String>) -> Self {
        self.evidence.extend(e);
        self
    }
    fn with_fix(
        mut self,
        text: impl Into<String>,
        commands: Vec<String>,
        action: Option<Action>,
    ) -> Self {
        self.fix = Some(Fix {
            text: text.into(),
            commands,
            action,
        });
        self
    }
}

/// A list that could not be read: the check is skipped (API down) or fails (not installed).
fn unreadable(id: &'static str, title: &'static str, s: &Snapshot, what: &str, err: &str) -> Check {
    if s.api.is_err() {
        return check(
            id,
            title,
            Verdict::Skip,
            "not checked: the k3s API does not answer".into(),
        );
    }
    check(
        id,
        title,
        Verdict::Fail,
        format!("cannot read {what}: {err}"),
    )
}

fn ts(t: &Time) -> String {
    t.0.to_string()
}

/// `12s ago`, `5m ago`, `3h ago`.
fn ago(t: &Time) -> String {
    let secs = k8s_openapi::jiff::Timestamp::now()
        .duration_since(t.0)
        .as_secs()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s => format!("{}h ago", s / 3600),
    }
}

fn kubectl(args: String) -> String {
    format!("kubectl {args}   # on the server: sudo k3s kubectl …")
}

fn dyn_name(o: &DynamicObject) -> &str {
    o.metadata.name.as_deref().unwrap_or("?")
}

fn ready_condition(o: &DynamicObject) -> Option<&Value> {
    o.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

fn str_of<'a>(v: &'a Value, default: &'a str) -> &'a str {
    v.as_str().unwrap_or(default)
}

// ------------------------------------------------------------------ the checks

fn api(s: &Snapshot) -> Check {
    const T: &str = "k3s API";
    match &s.api {
        Ok(v) => check("k3s-api", T, Verdict::Ok, format!("up, {v}")),
        Err(e) => check("k3s-api", T, Verdict::Fail, format!("does not answer: {e}"))
            .with_fix(
                "k3s is not serving its API: look at its service and log on the server; it restarts itself after a reboot (Restart=always)",
                vec![
                    "sudo systemctl status k3s".into(),
                    "sudo journalctl -u k3s -n 50".into(),
                    "sudo systemctl restart k3s".into(),
                ],
                None,
            ),
    }
}

fn node(s: &Snapshot) -> Check {
    const T: &str = "node Ready";
    let nodes = match &s.nodes {
        Ok(n) => n,
        Err(e) => return unreadable("node", T, s, "the nodes", e),
    };
    if nodes.is_empty() {
        return check("node", T, Verdict::Fail, "no node has registered".into()).with_fix(
            "k3s registers its node shortly after it starts; look at k3s's log",
            vec!["sudo journalctl -u k3s -n 50".into()],
            None,
        );
    }
    let mut bad = vec![];
    let mut good = vec![];
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        match ready {
            Some(c) if c.status == "True" => good.push(format!(
                "{name} Ready{}",
                c.last_transition_time
                    .as_ref()
                    .map(|t| format!(" since {}", ts(t)))
                    .unwrap_or_default()
            )),
            Some(c) => bad.push(format!(
                "{name}: Ready={} ({}: {})",
                c.status,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )),
            None => bad.push(format!("{name}: no Ready condition yet")),
        }
    }
    if bad.is_empty() {
        check("node", T, Verdict::Ok, good.join(", "))
    } else {
        let first = nodes[0].metadata.name.clone().unwrap_or_default();
        check(
            "node",
            T,
            Verdict::Fail,
            format!("not Ready: {}", bad.join("; ")),
        )
        .with_evidence(bad.clone())
        .with_fix(
            "the kubelet in k3s reports the node; look at its conditions and k3s's log",
            vec![
                kubectl(format!("describe node {first}")),
                "sudo journalctl -u k3s -n 50".into(),
            ],
            None,
        )
    }
}

fn find_pvc<'a>(config: &Config, s: &'a Snapshot) -> Option<&'a PersistentVolumeClaim> {
    s.pvcs
        .as_ref()
        .ok()?
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(config.vault.pvc.as_str()))
}

fn find_pv<'a>(s: &'a Snapshot, name: &str) -> Option<&'a PersistentVolume> {
    s.pvs
        .as_ref()
        .ok()?
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
}

fn pv_line(pv: &PersistentVolume) -> String {
    let spec = pv.spec.as_ref();
    let claim = spec
        .and_then(|s| s.claim_ref.as_ref())
        .map(|c| {
            format!(
                "claimRef {}/{} uid {}",
                c.namespace.clone().unwrap_or_default(),
                c.name.clone().unwrap_or_default(),
                c.uid.clone().unwrap_or_else(|| "(none)".into())
            )
        })
        .unwrap_or_else(|| "no claimRef".into());
    format!(
        "PersistentVolume {}: phase {}, {claim}, Longhorn volume {}",
        pv.metadata.name.clone().unwrap_or_default(),
        pv.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "?".into()),
        spec.and_then(|s| s.csi.as_ref())
            .map(|c| c.volume_handle.clone())
            .unwrap_or_else(|| "(not a CSI volume)".into())
    )
}

fn vault_pvc(config: &Config, s: &Snapshot) -> Check {
    const T: &str = "Vault's PVC";
    let (ns, name) = (&config.vault.namespace, &config.vault.pvc);
    if let Err(e) = &s.pvcs {
        return unreadable("vault-pvc", T, s, "the PVCs", e);
    }
    let restore = Fix {
        text: format!("Vault's data lives on PVC {ns}/{name}; on a destroyed node it is restored from the NAS backups"),
        commands: vec![
            kubectl(format!("-n {ns} describe pvc {name}")),
            "rebox rebuild --restore-from-nas".into(),
        ],
        action: None,
    };
    let Some(pvc) = find_pvc(config, s) else {
        let mut c = check(
            "vault-pvc",
            T,
            Verdict::Fail,
            format!("PVC {ns}/{name} does not exist"),
        );
        c.fix = Some(restore);
        return c;
    };
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    let volume_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty());
    let pv = volume_name.as_deref().and_then(|v| find_pv(s, v));
    let mut evidence = vec![format!(
        "PVC {ns}/{name}: phase {phase}, volumeName {}",
        volume_name.as_deref().unwrap_or("(none)")
    )];
    if let Some(pv) = pv {
        evidence.push(pv_line(pv));
    } else if let Some(v) = &volume_name {
        evidence.push(format!("PersistentVolume {v} does not exist"));
    }
    if phase == "Bound" {
        return check(
            "vault-pvc",
            T,
            Verdict::Ok,
            format!("{name} Bound to {}", volume_name.unwrap_or_default()),
        )
        .with_evidence(evidence);
    }
    let c = check(
        "vault-pvc",
        T,
        Verdict::Fail,
        format!("{name} is {phase}, not Bound: Vault cannot start"),
    )
    .with_evidence(evidence);
    // A Released PV that still names an earlier claim of the same name: clear the old uid.
    let rebind = pv.filter(|pv| {
        let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let same_name = pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some_and(|c| {
                c.namespace.as_deref() == Some(ns.as_str())
                    && c.name.as_deref() == Some(name.as_str())
                    && c.uid.is_some()
                    && c.uid != pvc.metadata.uid
            });
        released && same_name
    });
    match rebind {
        Some(pv) => {
            let pv_name = pv.metadata.name.clone().unwrap_or_default();
            c.with_fix(
                format!("PersistentVolume {pv_name} still holds the uid of an earlier claim {ns}/{name} (the PVC was deleted and recreated), so the new claim cannot bind; clear that uid so it binds to the same volume and data"),
                vec![kubectl(format!(
                    "patch pv {pv_name} --type=merge -p '{{\"spec\":{{\"claimRef\":{{\"uid\":null,\"resourceVersion\":null}}}}}}'"
                ))],
                Some(Action::RebindVolume { pv: pv_name }),
            )
        }
        None => {
            let mut c = c;
            c.fix = Some(restore);
            c
        }
    }
}

fn longhorn_volumes(config: &Config, s: &Snapshot) -> Check {
    const T: &str = "Longhorn volumes";
    let vols = match &s.volumes {
        Ok(v) => v,
        Err(e) => return unreadable("longhorn-volumes", T, s, "Longhorn's volumes", e),
    };
    let ln = &config.longhorn.namespace;
    let vault_vol = find_pvc(config, s)
        .and_then(|p| p.spec.as_ref()?.volume_name.clone())
        .and_then(|pv| {
            find_pv(s, &pv)?
                .spec
                .as_ref()?
                .csi
                .as_ref()
                .map(|c| c.volume_handle.clone())
        });
    let state = |o: &DynamicObject| {
        (
            str_of(&o.data["status"]["state"], "unknown").to_string(),
            str_of(&o.data["status"]["robustness"], "unknown").to_string(),
        )
    };
    let in_use = |o: &DynamicObject| {
        o.data["status"]["kubernetesStatus"]["workloadsStatus"]
            .as_array()
            .is_some_and(|w| !w.is_empty())
    };
    let mut evidence = vec![];
    let mut ordered: Vec<&DynamicObject> = vols.iter().collect();
    // Vault's volume first: it is the one the recovery waits on.
    ordered.sort_by_key(|o| Some(dyn_name(o)) != vault_vol.as_deref());
    for o in &ordered {
        let (st, rb) = state(o);
        let label = if Some(dyn_name(o)) == vault_vol.as_deref() {
            format!("{} ({})", dyn_name(o), config.vault.pvc)
        } else {
            dyn_name(o).to_string()
        };
        let restore = o.data["status"]["conditions"]
            .as_array()
            .and_then(|c| {
                c.iter()
                    .find(|c| c["type"] == "Restore" && c["status"] == "True")
            })
            .map(|c| format!(", restoring: {}", str_of(&c["message"], "")))
            .unwrap_or_default();
        evidence.push(format!("{label}: {st}, robustness {rb}{restore}"));
    }
    let attached = vols.iter().filter(|o| state(o).0 == "attached").count();
    let used: Vec<&DynamicObject> = vols.iter().filter(|o| in_use(o)).collect();
    let faulted: Vec<&str> = vols
        .iter()
        .filter(|o| state(o).1 == "faulted")
        .map(dyn_name)
        .collect();
    let vault_state = vault_vol
        .as_deref()
        .and_then(|v| vols.iter().find(|o| dyn_name(o) == v))
        .map(state);
    let describe = |v: &str| kubectl(format!("-n {ln} describe volumes.longhorn.io {v}"));
    let summary_tail = format!("{attached}/{} attached", vols.len());
    match (&vault_vol, &vault_state) {
        (None, _) => {
            return check(
                "longhorn-volumes",
                T,
                Verdict::Fail,
                format!("{} has no Longhorn volume yet; {summary_tail}", config.vault.pvc),
            )
            .with_evidence(evidence)
            .with_fix("see the check of Vault's PVC", vec![], None)
        }
        (Some(v), None) => {
            return check(
                "longhorn-volumes",
                T,
                Verdict::Fail,
                format!("{} names Longhorn volume {v}, which does not exist", config.vault.pvc),
            )
            .with_evidence(evidence)
            .with_fix(
                "the PV points at a volume Longhorn does not have: restore it from the NAS",
                vec!["rebox rebuild --restore-from-nas".into()],
                None,
            )
        }
        (Some(v), Some((st, _))) if st != "attached" => {
            return check(
                "longhorn-volumes",
                T,
                Verdict::Fail,
                format!("{} ({v}) is {st}, not attached: Vault cannot start; {summary_tail}", config.vault.pvc),
            )
            .with_evidence(evidence)
            .with_fix(
                "Longhorn attaches the volume once vault-0 is scheduled on the node; look at the volume and at vault-0",
                vec![describe(v), kubectl(format!("-n {} describe pod {}", config.vault.namespace, config.vault.pod))],
                None,
            )
        }
        _ => {}
    }
    if !faulted.is_empty() {
        return check(
            "longhorn-volumes",
            T,
            Verdict::Fail,
            format!("faulted: {}; {summary_tail}", faulted.join(", ")),
        )
        .with_evidence(evidence)
        .with_fix(
            "a faulted volume lost its replicas; restore it from the NAS backup",
            faulted.iter().map(|v| describe(v)).collect(),
            None,
        );
    }
    let detached_in_use: Vec<&str> = used
        .iter()
        .filter(|o| state(o).0 != "attached")
        .map(|o| dyn_name(o))
        .collect();
    let head = format!("{} attached; {summary_tail}", config.vault.pvc);
    if !detached_in_use.is_empty() {
        return check(
            "longhorn-volumes",
            T,
            Verdict::Warn,
            format!(
                "{head}; in use but detached: {}",
                detached_in_use.join(", ")
            ),
        )
        .with_evidence(evidence)
        .with_fix(
            "Longhorn attaches a volume when its pod starts; look at the volume",
            detached_in_use.iter().map(|v| describe(v)).collect(),
            None,
        );
    }
    check("longhorn-volumes", T, Verdict::Ok, head).with_evidence(evidence)
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn vault_pod(config: &Config, s: &Snapshot) -> Check {
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

fn vault(config: &Config, s: &Snapshot) -> Check {
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

fn unseal_secret(config: &Config, s: &Snapshot) -> Check {
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

/// `Complete`, `Failed` or `Running` from a Job's conditions.
pub fn job_result(j: &Job) -> &'static str {
    let conds = j.status.as_ref().and_then(|s| s.conditions.as_ref());
    let is = |t: &str| conds.is_some_and(|c| c.iter().any(|c| c.type_ == t && c.status == "True"));
    if is("Complete") {
        "Complete"
    } else if is("Failed") {
        "Failed"
    } else {
        "Running"
    }
}

fn cronjob(
    id: &'static str,
    title: &'static str,
    ns: &str,
    name: &str,
    urgent: bool,
    suspended_means: &str,
    s: &Snapshot,
) -> Check {
    if let Err(e) = &s.cronjobs {
        return unreadable(id, title, s, "the CronJobs", e);
    }
    let Some(cj) = s.cronjob(ns, name) else {
        return check(id, title, Verdict::Fail, format!("CronJob {ns}/{name} does not exist")).with_fix(
            "the rebuild installs the self-healing CronJobs; rerun it (every finished phase is skipped)",
            vec!["rebox rebuild".into()],
            None,
        );
    };
    let spec = cj.spec.as_ref();
    let status = cj.status.as_ref();
    let suspended = spec.and_then(|s| s.suspend).unwrap_or(false);
    let mut evidence = vec![format!(
        "schedule `{}`{}, last scheduled {}, last succeeded {}",
        spec.map(|s| s.schedule.as_str()).unwrap_or("?"),
        if suspended { ", SUSPENDED" } else { "" },
        status
            .and_then(|s| s.last_schedule_time.as_ref())
            .map(|t| format!("{} ({})", ts(t), ago(t)))
            .unwrap_or_else(|| "never".into()),
        status
            .and_then(|s| s.last_successful_time.as_ref())
            .map(|t| format!("{} ({})", ts(t), ago(t)))
            .unwrap_or_else(|| "never".into()),
    )];
    let jobs = s.jobs_of(ns, name);
    for j in jobs.iter().take(3) {
        let jname = j.metadata.name.clone().unwrap_or_default();
        let when = j
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| format!("started {}", ts(t)))
            .unwrap_or_default();
        evidence.push(format!("Job {jname}: {} ({when})", job_result(j)));
    }
    if let Some(j) = jobs.first() {
        let key = format!("{ns}/{}", j.metadata.name.clone().unwrap_or_default());
        if let Some(log) = s.job_logs.get(&key) {
            let body = if log.is_empty() {
                "(empty)".to_string()
            } else {
                log.clone()
            };
            evidence.push(format!(
                "log of Job {} (last lines):\n{body}",
                j.metadata.name.clone().unwrap_or_default()
            ));
        }
    }
    let run = Action::RunCronJob {
        namespace: ns.into(),
        name: name.into(),
    };
    let create = kubectl(format!(
        "-n {ns} create job {name}-manual --from=cronjob/{name}"
    ));
    if suspended {
        let verdict = if urgent { Verdict::Fail } else { Verdict::Warn };
        let why = if urgent {
            format!("suspended while Vault is sealed: nothing unseals it; {suspended_means}")
        } else {
            format!("suspended: {suspended_means}")
        };
        return check(id, title, verdict, why)
            .with_evidence(evidence)
            .with_fix(
                "resume it (someone suspended it; make sure that was not deliberate)",
                vec![kubectl(format!(
                "-n {ns} patch cronjob {name} --type=merge -p '{{\"spec\":{{\"suspend\":false}}}}'"
            ))],
                Some(Action::ResumeCronJob {
                    namespace: ns.into(),
                    name: name.into(),
                }),
            );
    }
    let last_finished = jobs.iter().find(|j| job_result(j) != "Running");
    match last_finished {
        Some(j) if job_result(j) == "Failed" => {
            let jname = j.metadata.name.clone().unwrap_or_default();
            check(id, title, Verdict::Fail, format!("its last run, Job {jname}, failed"))
                .with_evidence(evidence)
                .with_fix(
                    "its log above says why (see also the other checks); once that is fixed, run it again and check the result",
                    vec![kubectl(format!("-n {ns} logs job/{jname}")), create],
                    Some(run),
                )
        }
        Some(j) => check(
            id,
            title,
            Verdict::Ok,
            format!(
                "last run {} succeeded{}",
                j.metadata.name.clone().unwrap_or_default(),
                j.status
                    .as_ref()
                    .and_then(|s| s.completion_time.as_ref())
                    .map(|t| format!(" at {}", ts(t)))
                    .unwrap_or_default()
            ),
        )
        .with_evidence(evidence),
        None if !jobs.is_empty() => check(
            id,
            title,
            Verdict::Ok,
            "running now (no finished run yet)".into(),
        )
        .with_evidence(evidence),
        None => check(id, title, Verdict::Warn, "has not run yet".into())
            .with_evidence(evidence)
            .with_fix(
                "start a Job from it now and check the result, instead of waiting for its schedule",
                vec![create],
                Some(run),
            ),
    }
}

fn secret_store(config: &Config, s: &Snapshot) -> Check {
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

fn external_secrets(s: &Snapshot) -> Check {
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

/// Whether an Application is Synced and Healthy.
pub fn app_ok(o: &DynamicObject) -> bool {
    o.data["status"]["sync"]["status"] == "Synced"
        && o.data["status"]["health"]["status"] == "Healthy"
}

/// The reason an Application is stuck: its sync error, else its conditions, else its health.
pub fn app_problem(o: &DynamicObject) -> String {
    let st = &o.data["status"];
    let mut parts = vec![format!(
        "sync {}, health {}",
        str_of(&st["sync"]["status"], "Unknown"),
        str_of(&st["health"]["status"], "Unknown")
    )];
    if let Some(m) = st["operationState"]["message"]
        .as_str()
        .filter(|m| !m.is_empty())
    {
        parts.push(format!(
            "last sync {}: {m}",
            str_of(&st["operationState"]["phase"], "?")
        ));
    }
    let op_message = st["operationState"]["message"].as_str().unwrap_or("");
    for c in st["conditions"].as_array().into_iter().flatten() {
        // Argo CD repeats the sync error as a SyncError condition: say it once.
        if str_of(&c["message"], "") != op_message {
            parts.push(format!(
                "{}: {}",
                str_of(&c["type"], "?"),
                str_of(&c["message"], "")
            ));
        }
    }
    if let Some(m) = st["health"]["message"].as_str().filter(|m| !m.is_empty()) {
        parts.push(format!("health: {m}"));
    }
    parts.join("; ")
}

fn argocd_apps(config: &Config, s: &Snapshot) -> Check {
    const T: &str = "Argo CD apps";
    let ns = &config.argocd.namespace;
    let apps = match &s.apps {
        Ok(v) => v,
        Err(e) => return unreadable("argocd-apps", T, s, "the Argo CD Applications", e),
    };
    if apps.is_empty() {
        return check(
            "argocd-apps",
            T,
            Verdict::Warn,
            format!("no Application in namespace {ns}"),
        )
        .with_fix(
            "the rebuild creates the root Application",
            vec!["rebox rebuild".into()],
            None,
        );
    }
    let bad: Vec<&DynamicObject> = apps.iter().filter(|o| !app_ok(o)).collect();
    let good = apps.len() - bad.len();
    if bad.is_empty() {
        return check(
            "argocd-apps",
            T,
            Verdict::Ok,
            format!("{good}/{} Synced and Healthy", apps.len()),
        );
    }
    // A sync still running is progress, not a fault.
    let running = |o: &DynamicObject| o.data["status"]["operationState"]["phase"] == "Running";
    let stuck: Vec<&DynamicObject> = bad.iter().copied().filter(|o| !running(o)).collect();
    let names: Vec<String> = bad.iter().map(|o| dyn_name(o).to_string()).collect();
    let evidence: Vec<String> = bad
        .iter()
        .map(|o| format!("{}: {}", dyn_name(o), app_problem(o)))
        .collect();
    let summary = format!(
        "{good}/{} Synced and Healthy; not: {}",
        apps.len(),
        names.join(", ")
    );
    if stuck.is_empty() {
        return check(
            "argocd-apps",
            T,
            Verdict::Warn,
            format!("{summary} (syncing)"),
        )
        .with_evidence(evidence);
    }
    let stuck_names: Vec<String> = stuck.iter().map(|o| dyn_name(o).to_string()).collect();
    check("argocd-apps", T, Verdict::Fail, summary)
        .with_evidence(evidence)
        .with_fix(
            "hard-refresh the stuck app(s) (drops Argo CD's cached manifests and cluster state) and wait; if one stays OutOfSync, its sync error above is the reason, to be fixed in Git",
            stuck_names
                .iter()
                .map(|n| kubectl(format!("-n {ns} annotate application {n} argocd.argoproj.io/refresh=hard --overwrite")))
                .chain(stuck_names.first().map(|n| kubectl(format!("-n {ns} describe application {n}"))))
                .collect(),
            Some(Action::RefreshApps { apps: stuck_names }),
        )
}

/// A list's items, or nothing when it could not be read.
pub fn items<T>(l: &Listed<T>) -> &[T] {
    l.as_ref().map(|v| v.as_slice()).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::SealStatus;
    use serde_json::json;

    fn healthy() -> Snapshot {
        let mut s = Snapshot::unreachable("lab".into(), "x");
        s.api = Ok("v1.35.0+k3s1 at 127.0.0.1:6443".into());
        s.nodes = Ok(vec![serde_json::from_value(json!({"metadata": {"name": "lab"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})).unwrap()]);
        s.pvcs = Ok(vec![serde_json::from_value(json!({"metadata": {"name": "vault-data-lh", "namespace": "security", "uid": "new"}, "spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}})).unwrap()]);
        s.pvs = Ok(vec![serde_json::from_value(json!({"metadata": {"name": "pv1"}, "spec": {"csi": {"driver": "driver.longhorn.io", "volumeHandle": "pv1"}, "claimRef": {"namespace": "security", "name": "vault-data-lh", "uid": "new"}}, "status": {"phase": "Bound"}})).unwrap()]);
        let mut vol =
            DynamicObject::new("pv1", &crate::site::readiness::longhorn_volume_resource());
        vol.data = json!({"status": {"state": "attached", "robustness": "healthy"}});
        s.volumes = Ok(vec![vol]);
        s.pods = Ok(vec![serde_json::from_value(json!({"metadata": {"name": "vault-0"}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})).unwrap()]);
        s.secret = Ok(Some(crate::site::SecretInfo {
            keys: vec!["key".into()],
            shares: Some(Ok(1)),
        }));
        s.cronjobs = Ok(vec![]);
        s.jobs = Ok(vec![]);
        s.stores = Ok(vec![]);
        s.external_secrets = Ok(vec![]);
        s.apps = Ok(vec![]);
        s.vault = Ok(serde_json::from_value::<SealStatus>(
            json!({"initialized": true, "sealed": false, "t": 1, "n": 1}),
        )
        .unwrap());
        s
    }

    fn by_id<'a>(c: &'a [Check], id: &str) -> &'a Check {
        c.iter().find(|c| c.id == id).unwrap()
    }

    #[test]
    fn doctor_api_down_skips_what_needs_it() {
        let s = Snapshot::unreachable("lab".into(), "connection refused");
        let c = all_checks(&Config::default(), &s);
        assert_eq!(by_id(&c, "k3s-api").verdict, Verdict::Fail);
        assert!(c
            .iter()
            .filter(|c| c.id != "k3s-api")
            .all(|c| c.verdict == Verdict::Skip));
    }

    #[test]
    fn doctor_sealed_vault_proposes_unseal_and_a_suspended_cronjob_fails() {
        let mut s = healthy();
        s.vault = Ok(serde_json::from_value(
            json!({"initialized": true, "sealed": true, "t": 3, "n": 5, "progress": 1}),
        )
        .unwrap());
        s.cronjobs = Ok(vec![serde_json::from_value(json!({"metadata": {"name": "vault-auto-unseal", "namespace": "security", "uid": "u"}, "spec": {"schedule": "* * * * *", "suspend": true, "jobTemplate": {}}})).unwrap()]);
        let c = all_checks(&Config::default(), &s);
        let v = by_id(&c, "vault");
        assert_eq!(v.verdict, Verdict::Fail);
        assert!(v.summary.contains("1 of 3"), "{}", v.summary);
        assert_eq!(v.fix.as_ref().unwrap().action, Some(Action::Unseal));
        let cj = by_id(&c, "unseal-cronjob");
        assert_eq!(cj.verdict, Verdict::Fail);
        assert!(matches!(
            cj.fix.as_ref().unwrap().action,
            Some(Action::ResumeCronJob { .. })
        ));
        // The Secret holds 1 share where 3 are needed.
        assert_eq!(by_id(&c, "unseal-secret").verdict, Verdict::Fail);
    }

    #[test]
    fn doctor_released_pv_of_the_same_claim_is_rebound() {
        let mut s = healthy();
        s.pvcs = Ok(vec![serde_json::from_value(json!({"metadata": {"name": "vault-data-lh", "namespace": "security", "uid": "new"}, "spec": {"volumeName": "pv1"}, "status": {"phase": "Pending"}})).unwrap()]);
        s.pvs = Ok(vec![serde_json::from_value(json!({"metadata": {"name": "pv1"}, "spec": {"csi": {"driver": "driver.longhorn.io", "volumeHandle": "pv1"}, "claimRef": {"namespace": "security", "name": "vault-data-lh", "uid": "old"}}, "status": {"phase": "Released"}})).unwrap()]);
        let c = all_checks(&Config::default(), &s);
        let p = by_id(&c, "vault-pvc");
        assert_eq!(p.verdict, Verdict::Fail);
        assert!(
            p.evidence
                .iter()
                .any(|e| e.contains("phase Released") && e.contains("uid old")),
            "{:?}",
            p.evidence
        );
        assert_eq!(
            p.fix.as_ref().unwrap().action,
            Some(Action::RebindVolume { pv: "pv1".into() })
        );
    }

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

    #[test]
    fn status_shows_the_sequence_in_order() {
        let c = status_checks(&Config::default(), &healthy());
        let ids: Vec<&str> = c.iter().map(|c| c.id).collect();
        assert_eq!(ids, STATUS_IDS);
    }
}
