//! The last step of the sequence: Argo CD's Applications, Synced and Healthy, or the reason
//! one is stuck.

use kube::api::DynamicObject;

use super::{check, dyn_name, kubectl, str_of, unreadable};
use crate::config::Config;
use crate::doctor::snapshot::Snapshot;
use crate::doctor::{Action, Check, Verdict};

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

pub(super) fn argocd_apps(config: &Config, s: &Snapshot) -> Check {
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
