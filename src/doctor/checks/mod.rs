//! The checks: pure functions from a [`Snapshot`] to [`Check`]s, in the order of the recovery
//! sequence (so `status --watch` reports them in the order a reboot heals them).
//!
//! `status` shows the sequence (k3s API, node, Longhorn volumes, Vault, the unseal CronJob,
//! the store, ExternalSecrets, Argo CD apps); `doctor` adds the evidence of the guide's
//! scenarios 2–4 (Vault's PVC and pod, the unseal Secret, the ESO recovery CronJob).
//!
//! One file per subject, in sequence order: `cluster` (k3s API, node), `volumes` (Vault's
//! PVC and PV, Longhorn volumes), `vault` (vault-0, seal status, the unseal Secret),
//! `cronjobs` (the self-healing CronJobs and their Jobs), `eso` (the ClusterSecretStore,
//! ExternalSecrets), `argocd` (Applications). This file holds the entry points, the helpers
//! they share and the tests that span subjects.

mod argocd;
mod cluster;
mod cronjobs;
mod eso;
mod vault;
mod volumes;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use serde_json::Value;

use super::snapshot::{Listed, Snapshot};
use super::{Action, Check, Fix, Verdict};
use crate::config::Config;
use argocd::argocd_apps;
use cluster::{api, node};
use cronjobs::cronjob;
use eso::{external_secrets, secret_store};
use vault::{unseal_secret, vault, vault_pod};
use volumes::{longhorn_volumes, vault_pvc};

pub use argocd::{app_ok, app_problem};
pub use cronjobs::job_result;

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

/// A list's items, or nothing when it could not be read.
pub fn items<T>(l: &Listed<T>) -> &[T] {
    l.as_ref().map(|v| v.as_slice()).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::SealStatus;
    use serde_json::json;

    /// A snapshot where every check is ok; the tests of each subject break one part of it.
    pub(super) fn healthy() -> Snapshot {
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

    pub(super) fn by_id<'a>(c: &'a [Check], id: &str) -> &'a Check {
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
    fn status_shows_the_sequence_in_order() {
        let c = status_checks(&Config::default(), &healthy());
        let ids: Vec<&str> = c.iter().map(|c| c.id).collect();
        assert_eq!(ids, STATUS_IDS);
    }
}
