//! The self-healing CronJobs (Vault's auto-unseal, ESO's recovery) and their Jobs: suspended,
//! failed, never run, or last run succeeded, with the log of the last Job as evidence.

use k8s_openapi::api::batch::v1::Job;

use super::{ago, check, kubectl, ts, unreadable};
use crate::doctor::snapshot::Snapshot;
use crate::doctor::{Action, Check, Verdict};

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

pub(super) fn cronjob(
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
