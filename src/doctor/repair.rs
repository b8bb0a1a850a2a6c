//! `rebox doctor`'s use case: examine the homelab, plan the guide's fixes in the order of the
//! recovery, apply them one by one with a re-check after each, and let a fix reveal the next
//! step (an unsealed Vault, then a store still degraded) for up to three rounds.

use anyhow::Result;
use serde::Serialize;

use super::fix::{Fixer, KeyMaterial};
use super::{all_checks, Action, Report, Verdict};
use crate::config::Config;
use crate::site::Site;

/// What happened to one fix.
#[derive(Debug, Serialize)]
pub struct Applied {
    check: &'static str,
    action: Action,
    /// `applied`, `failed` or `skipped`.
    result: &'static str,
    message: String,
    /// The check's verdict when re-checked after the fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    verdict_after: Option<Verdict>,
}

/// What `doctor --fix` did: the report before, each fix, the report after.
#[derive(Serialize)]
pub struct FixReport {
    pub before: Report,
    pub fixes: Vec<Applied>,
    pub after: Report,
    pub ok: bool,
    /// No fix applied because none of the failures is one `--fix` can repair.
    #[serde(skip)]
    pub nothing_to_fix: bool,
}

/// `doctor --fix`: plans the fixes for `report`, lists them, asks (`ask`, also before each
/// later round), applies them with a re-check after each.
pub async fn fix(
    site: &Site,
    report: Report,
    key: KeyMaterial,
    mut ask: impl FnMut(&str) -> Result<bool>,
) -> Result<FixReport> {
    let todo = plan(&report);
    if todo.is_empty() || site.cluster().await.is_err() {
        return Ok(FixReport {
            ok: report.ok,
            before: report.clone(),
            fixes: vec![],
            after: report,
            nothing_to_fix: true,
        });
    }
    eprintln!("\nrebox doctor --fix will, in this order (re-checking after each):");
    list(&todo, &site.config);
    if !ask("Apply these fixes?")? {
        anyhow::bail!(crate::next::hinted(
            "not confirmed; nothing was changed",
            "answer yes, or pass --yes in scripts"
        ));
    }
    let before = report.clone();
    let (fixes, after) = repair(site, report, todo, key, ask).await?;
    Ok(FixReport {
        before,
        fixes,
        ok: after.ok,
        after,
        nothing_to_fix: false,
    })
}

fn list(todo: &[(&'static str, Action)], config: &Config) {
    for (i, (_, a)) in todo.iter().enumerate() {
        eprintln!("  {}. {}", i + 1, a.describe(config));
    }
}

/// Checks everything, with the Jobs' log tails as evidence.
pub async fn examine(site: &Site) -> Result<Report> {
    let snap = super::snapshot::of(site, true).await?;
    Ok(Report::doctor(
        site.remote.target.addr(),
        all_checks(&site.config, &snap),
    ))
}

/// Why a fix cannot help yet, judged on the current report (the fix it waits for failed).
fn blocked(action: &Action, report: &Report, config: &Config) -> Option<String> {
    let failing = |id: &str| {
        report
            .checks
            .iter()
            .find(|c| c.id == id)
            .is_some_and(|c| matches!(c.verdict, Verdict::Fail | Verdict::Skip))
    };
    match action {
        Action::RestartEso if failing("vault") => {
            Some("Vault is not unsealed, so ESO could not validate the store".into())
        }
        Action::RunCronJob { name, .. }
            if *name == config.vault.unseal_cronjob && failing("unseal-secret") =>
        {
            Some("the unseal key Secret is not usable, so its Job would fail again".into())
        }
        _ => None,
    }
}

/// The fixes to apply, in check order (which is the order of the recovery), each once.
/// One exception: a missing Secret is recreated before Vault is unsealed, because recreating
/// it unseals a sealed Vault with the backup's key (proving the key before it is stored).
pub fn plan(report: &Report) -> Vec<(&'static str, Action)> {
    let mut out: Vec<(&'static str, Action)> = vec![];
    for c in &report.checks {
        if c.verdict == Verdict::Ok {
            continue;
        }
        if let Some(a) = c.fix.as_ref().and_then(|f| f.action.clone()) {
            if !out.iter().any(|(_, b)| *b == a) {
                out.push((c.id, a));
            }
        }
    }
    let unseal = out.iter().position(|(_, a)| *a == Action::Unseal);
    let recreate = out.iter().position(|(_, a)| *a == Action::RecreateSecret);
    if let (Some(u), Some(r)) = (unseal, recreate) {
        if r > u {
            let item = out.remove(r);
            out.insert(u, item);
        }
    }
    out
}

/// Applies `todo` (from [`plan`]) and what the re-checks reveal after it. `ask` gets the
/// question before every round after the first; the answer no ends the repair. Returns every fix's outcome and the last report.
async fn repair(
    site: &Site,
    mut report: Report,
    mut todo: Vec<(&'static str, Action)>,
    mut key: KeyMaterial,
    mut ask: impl FnMut(&str) -> Result<bool>,
) -> Result<(Vec<Applied>, Report)> {
    let config = &site.config;
    let mut applied: Vec<Applied> = vec![];
    let mut attempted: Vec<Action> = vec![];
    // A fix can reveal the next step (unsealed Vault, then the store still degraded; a resumed
    // CronJob that has never run): up to three rounds, never the same fix twice.
    for round in 0..3 {
        if round > 0 {
            todo = plan(&report)
                .into_iter()
                .filter(|(_, a)| !attempted.contains(a) && blocked(a, &report, config).is_none())
                .collect();
            if todo.is_empty() {
                break;
            }
            eprintln!("\nThe re-check found more that --fix can repair:");
            list(&todo, config);
            if !ask("Apply these fixes too?")? {
                break;
            }
        }
        for (check_id, action) in std::mem::take(&mut todo) {
            // Re-checked first: an earlier fix may have repaired this one too.
            let still = report
                .checks
                .iter()
                .find(|c| c.id == check_id)
                .is_some_and(|c| c.verdict != Verdict::Ok);
            if !still {
                eprintln!(
                    "  - {check_id}: healthy now, skipped: {}",
                    action.describe(config)
                );
                applied.push(Applied {
                    check: check_id,
                    action,
                    result: "skipped",
                    message: "healthy after an earlier fix".into(),
                    verdict_after: Some(Verdict::Ok),
                });
                continue;
            }
            if let Some(why) = blocked(&action, &report, config) {
                eprintln!("  - not now: {} ({why})", action.describe(config));
                applied.push(Applied {
                    check: check_id,
                    action,
                    result: "skipped",
                    message: why,
                    verdict_after: None,
                });
                continue;
            }
            attempted.push(action.clone());
            eprintln!("  - {}", action.describe(config));
            let mut fixer = Fixer {
                site,
                key: &mut key,
            };
            let outcome = fixer.apply(&action).await;
            report = examine(site).await?;
            let after = report
                .checks
                .iter()
                .find(|c| c.id == check_id)
                .map(|c| c.verdict);
            let (result, message) = match outcome {
                Ok(m) => ("applied", m),
                Err(e) => ("failed", crate::next::describe(&e)),
            };
            eprintln!(
                "    {result}: {}\n    re-checked: {}",
                message.replace('\n', "\n      "),
                after.map(|v| v.mark().trim()).unwrap_or("?")
            );
            applied.push(Applied {
                check: check_id,
                action,
                result,
                message,
                verdict_after: after,
            });
        }
    }
    Ok((applied, report))
}
