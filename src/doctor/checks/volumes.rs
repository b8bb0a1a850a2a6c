//! Vault's storage: its PVC and PersistentVolume (rebound when a recreated claim cannot bind)
//! and the Longhorn volumes, Vault's first.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::DynamicObject;

use super::{check, dyn_name, kubectl, str_of, unreadable};
use crate::config::Config;
use crate::doctor::snapshot::Snapshot;
use crate::doctor::{Action, Check, Fix, Verdict};

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

pub(super) fn vault_pvc(config: &Config, s: &Snapshot) -> Check {
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

pub(super) fn longhorn_volumes(config: &Config, s: &Snapshot) -> Check {
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

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::doctor::checks::all_checks;
    use crate::doctor::checks::tests::{by_id, healthy};
    use crate::doctor::{Action, Verdict};
    use serde_json::json;

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
}
