//! The recovery guide as checks (`rebox status`, `rebox doctor`) and fixes (`doctor --fix`).
//!
//! The guide's scenarios (design.md): 1 a reboot heals itself (k3s, node, Longhorn volumes,
//! the `vault-auto-unseal` CronJob unseals Vault, `eso-recovery` restarts ESO, ExternalSecrets
//! sync, apps recover); 2 Vault stuck sealed; 3 the ClusterSecretStore degraded; 4 an Argo CD
//! app stuck OutOfSync. Each step becomes a [`Check`]: a verdict, a one-line summary, the
//! evidence it is based on, and the exact fix (an [`Action`] when `--fix` can apply it).
//!
//! - [`snapshot`]: what the checks read, gathered once (lists) or kept current (watches);
//! - [`checks`]: pure functions from a snapshot to checks (unit-tested without a cluster);
//! - [`fix`]: the guide's fixes, each verified after it is applied;
//! - [`watch`]: `status --watch`, following kube watches until everything is healthy.
//!
//! Secrets: the unseal Secret is reduced to "exists, has the key field, holds N shares" the
//! moment it is read; its value never reaches a check, a log line or the output.

pub mod checks;
pub mod fix;
pub mod repair;
pub mod snapshot;
pub mod unseal;
pub mod watch;

use serde::Serialize;

pub use checks::{all_checks, status_checks};
pub use snapshot::Snapshot;

/// How a check came out. Ordered from good to bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
    /// Not checked: what it needs is not reachable (e.g. the k3s API is down).
    Skip,
}

impl Verdict {
    /// The fixed-width mark of the human report.
    pub fn mark(self) -> &'static str {
        match self {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
    /// Healthy for `status`: ok, or a warning that does not stop recovery.
    pub fn healthy(self) -> bool {
        matches!(self, Verdict::Ok | Verdict::Warn)
    }
}

/// One step of the guide, checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub title: &'static str,
    pub verdict: Verdict,
    pub summary: String,
    /// What the verdict is based on (conditions, phases, a Job's log tail, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
}

/// What to do about a check that is not ok.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fix {
    /// In words.
    pub text: String,
    /// The exact commands (on the laptop, or `kubectl` on the server).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// What `rebox doctor --fix` does about it; None when only the operator can.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

/// A fix `rebox doctor --fix` can apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// Let a PVC bind again to its Released PV (the PV still names the old claim's uid).
    RebindVolume { pv: String },
    /// Unseal Vault with the key from the Secret, else from the offline backup (--from).
    Unseal,
    /// Recreate the unseal key Secret from the offline backup (--from).
    RecreateSecret,
    /// `spec.suspend: false` on a CronJob.
    ResumeCronJob { namespace: String, name: String },
    /// `kubectl create job --from=cronjob/NAME`, waited for.
    RunCronJob { namespace: String, name: String },
    /// Rollout-restart the ESO Deployments, then wait for the store to be Ready.
    RestartEso,
    /// Set Vault up for ESO again (in-cluster Kubernetes auth, policy, role) with a
    /// short-lived root token from the unseal key, then restart ESO.
    ReadyVaultForEso,
    /// Hard-refresh Applications, then wait for them to be Synced and Healthy.
    RefreshApps { apps: Vec<String> },
}

impl Action {
    /// One line for the plan shown before `--fix` asks for confirmation.
    pub fn describe(&self, config: &crate::config::Config) -> String {
        let v = &config.vault;
        match self {
            Action::RebindVolume { pv } => format!(
                "let PVC {}/{} bind again to PersistentVolume {pv} (clear the old claim's uid from the PV)",
                v.namespace, v.pvc
            ),
            Action::Unseal => format!(
                "unseal Vault with the key from Secret {}/{} (or the offline backup given with --from)",
                v.namespace, v.unseal_secret
            ),
            Action::RecreateSecret => format!(
                "recreate Secret {}/{} (key `{}`) from the offline backup given with --from",
                v.namespace, v.unseal_secret, v.unseal_secret_key
            ),
            Action::ResumeCronJob { namespace, name } => {
                format!("resume CronJob {namespace}/{name} (spec.suspend: false)")
            }
            Action::RunCronJob { namespace, name } => {
                format!("start a Job from CronJob {namespace}/{name} and wait for its result")
            }
            Action::RestartEso => format!(
                "rollout-restart Deployments {}/{} and wait for ClusterSecretStore {} to be Ready",
                config.eso.namespace,
                config.eso.deployments.join(", "),
                config.eso.store
            ),
            Action::ReadyVaultForEso => format!(
                "set Vault's Kubernetes auth at {}/ up in-cluster for role {} (a short-lived root token from the unseal key, revoked at once), then restart ESO",
                config.eso.vault_auth_mount, config.eso.vault_role
            ),
            Action::RefreshApps { apps } => format!(
                "hard-refresh Argo CD Application(s) {} and wait for Synced and Healthy",
                apps.join(", ")
            ),
        }
    }
}

/// A set of checks, as `doctor` and `status` print them.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No check fails (doctor) / every step healthy (status).
    pub ok: bool,
    pub target: String,
    pub checks: Vec<Check>,
}

impl Report {
    /// A doctor report: ok unless a check fails or could not run.
    pub fn doctor(target: String, checks: Vec<Check>) -> Report {
        let ok = !checks
            .iter()
            .any(|c| matches!(c.verdict, Verdict::Fail | Verdict::Skip));
        Report { ok, target, checks }
    }

    /// A status report: ok when every step is healthy.
    pub fn status(target: String, checks: Vec<Check>) -> Report {
        let ok = checks.iter().all(|c| c.verdict.healthy());
        Report { ok, target, checks }
    }

    pub fn count(&self, v: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == v).count()
    }
}

/// The human doctor report: every check, with evidence and fixes for those not ok.
pub fn render_doctor(report: &Report) -> String {
    let mut out = format!("rebox doctor: {}\n\n", report.target);
    for c in &report.checks {
        out.push_str(&render_check(c, true));
    }
    let (fails, warns) = (
        report.count(Verdict::Fail) + report.count(Verdict::Skip),
        report.count(Verdict::Warn),
    );
    let fixable = report
        .checks
        .iter()
        .any(|c| c.fix.as_ref().is_some_and(|f| f.action.is_some()));
    out.push('\n');
    if fails == 0 && warns == 0 {
        out.push_str("Clean bill of health: every check passed.\n");
    } else {
        out.push_str(&format!(
            "{fails} check(s) fail, {warns} warn.{}\n",
            if fixable {
                " `rebox doctor --fix` applies the fixes marked [--fix] (it asks first)."
            } else {
                " The fixes above are for the operator to apply."
            }
        ));
    }
    out
}

/// One check: the verdict line, then (with `detail`, when not ok) evidence and the fix.
pub fn render_check(c: &Check, detail: bool) -> String {
    let mut out = format!("  {}  {:<22} {}\n", c.verdict.mark(), c.title, c.summary);
    if !detail || c.verdict == Verdict::Ok {
        return out;
    }
    for e in &c.evidence {
        for (i, line) in e.lines().enumerate() {
            let lead = if i == 0 { "- " } else { "  " };
            out.push_str(&format!("          {lead}{line}\n"));
        }
    }
    if let Some(f) = &c.fix {
        let tag = if f.action.is_some() { " [--fix]" } else { "" };
        out.push_str(&format!("          fix{tag}: {}\n", f.text));
        for cmd in &f.commands {
            out.push_str(&format!("            $ {cmd}\n"));
        }
    }
    out
}

/// The human status checklist.
pub fn render_status(report: &Report) -> String {
    let mut out = format!("rebox status: {}\n\n", report.target);
    for c in &report.checks {
        out.push_str(&render_check(c, false));
    }
    out.push('\n');
    if report.ok {
        out.push_str("Everything is healthy.\n");
    } else {
        out.push_str("Not healthy yet: `rebox status --watch` follows the recovery; `rebox doctor` says why and what to do.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(verdict: Verdict) -> Check {
        Check {
            id: "x",
            title: "X",
            verdict,
            summary: "s".into(),
            evidence: vec!["line one\nline two".into()],
            fix: Some(Fix {
                text: "do it".into(),
                commands: vec!["rebox unseal".into()],
                action: Some(Action::Unseal),
            }),
        }
    }

    #[test]
    fn doctor_report_fails_on_fail_or_skip_but_not_warn() {
        assert!(Report::doctor("t".into(), vec![check(Verdict::Ok), check(Verdict::Warn)]).ok);
        assert!(!Report::doctor("t".into(), vec![check(Verdict::Fail)]).ok);
        assert!(!Report::doctor("t".into(), vec![check(Verdict::Skip)]).ok);
    }

    #[test]
    fn doctor_rendering_shows_evidence_and_fix_only_when_not_ok() {
        let ok = render_check(&check(Verdict::Ok), true);
        assert!(!ok.contains("fix"), "{ok}");
        let bad = render_check(&check(Verdict::Fail), true);
        assert!(
            bad.contains("- line one\n") && bad.contains("  line two\n"),
            "{bad}"
        );
        assert!(
            bad.contains("fix [--fix]: do it") && bad.contains("$ rebox unseal"),
            "{bad}"
        );
    }

    #[test]
    fn doctor_actions_serialize_with_a_kind() {
        let v = serde_json::to_value(Action::RefreshApps {
            apps: vec!["root".into()],
        })
        .unwrap();
        assert_eq!(v["kind"], "refresh-apps");
        assert_eq!(v["apps"][0], "root");
    }
}
