//! The restore's closing report, also after a failure: the phases, the data-loss table, what
//! Longhorn says of each volume and Argo CD of each app now, written next to the laptop's
//! journal.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::flow::RunReport;
use crate::rebuild::Ctx;
use crate::restore::longhorn::{self, Wanted};
use crate::restore::report::{self, Report};

/// Builds the report from `result` and what the cluster answers now, hands it to `show`, and
/// writes it beside `journal`; returns where (None when it could not be written: `show` has
/// been given it anyway).
pub async fn report(
    ctx: &mut Ctx,
    result: &Result<RunReport>,
    journal: &Path,
    show: impl FnOnce(&Report<'_>),
) -> Option<PathBuf> {
    let (apps, recurring) = match ctx.site.cluster().await {
        Ok(c) => {
            let client = c.client.clone();
            let apps = report::app_states(&client, &ctx.site.config.argocd.namespace)
                .await
                .unwrap_or_default();
            let ns = &ctx.site.config.longhorn.namespace;
            let jobs = longhorn::api(&client, ns, "RecurringJob", "recurringjobs")
                .list(&Default::default())
                .await
                .map(|l| l.items.len());
            // Volumes restored by an earlier run: what Longhorn says about them now.
            if let Some(r) = ctx.restore.as_mut().filter(|r| r.outcomes.is_empty()) {
                let wanted: Vec<_> = r.table.to_restore().map(Wanted::from).collect();
                r.outcomes = longhorn::observed(&client, ns, &wanted).await;
            }
            (apps, jobs.ok())
        }
        Err(_) => (Vec::new(), None),
    };
    let restore = ctx.restore.as_ref();
    let recurring_jobs = match recurring {
        Some(n) => format!(
            "rebox created no recurring backup job itself; each restored volume got its own recurring jobs back from its backup (restoreVolumeRecurringJob: enabled; Longhorn skips a volume for them while it restores), and Argo CD (which may bring more) started only after every restore was checked; {n} recurring job(s) exist now"
        ),
        None => "not checked (the cluster did not answer)".into(),
    };
    let report = Report {
        host: ctx.site.remote.target.host.clone(),
        finished_at: crate::flow::journal::now(),
        succeeded: result.is_ok(),
        error: result.as_ref().err().map(crate::next::describe),
        phases: result.as_ref().ok(),
        backups: restore.map(|r| &r.table),
        volumes: restore.map(|r| r.outcomes.as_slice()).unwrap_or_default(),
        apps: &apps,
        recurring_jobs,
    };
    show(&report);
    match report.write(journal) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("warning: could not write the report: {e:#}");
            None
        }
    }
}

/// What the operator does after a successful restore.
pub fn next_steps(ctx: &Ctx, report: Option<&Path>) -> Vec<String> {
    let mut out = vec![
        format!(
            "check the apps: Argo CD deploys them onto the restored volumes (`kubectl -n {} get applications` on the server)",
            ctx.site.config.argocd.namespace
        ),
        "keep the offline backup file: Vault still uses the same unseal key".into(),
    ];
    if let Some(p) = report {
        out.push(format!("the report is in {}", p.display()));
    }
    out
}
