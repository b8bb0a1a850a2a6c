//! `rebox doctor [--fix]`: the guide's scenarios checked with evidence; `--fix` applies the
//! fixes after a confirmation, re-checking after each one.

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::cli::{DoctorArgs, GlobalArgs};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::doctor::fix::{Fixer, KeyMaterial};
use crate::doctor::{self, snapshot, Action, Report, Snapshot, Verdict};
use crate::keys::SecretText;
use crate::remote::Remote;

/// Exit status when a check fails (1 is kept for errors of rebox itself).
const CHECKS_FAILED: u8 = 2;

/// What happened to one fix.
#[derive(Debug, Serialize)]
struct Applied {
    check: &'static str,
    action: Action,
    /// `applied`, `failed` or `skipped`.
    result: &'static str,
    message: String,
    /// The check's verdict when re-checked after the fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    verdict_after: Option<Verdict>,
}

#[derive(Serialize)]
struct FixReport<'a> {
    before: &'a Report,
    fixes: &'a [Applied],
    after: &'a Report,
    ok: bool,
}

/// Checks everything; `cluster` is the connected client or why it could not connect.
async fn examine(
    remote: &Remote,
    cluster: Result<&Cluster, &str>,
    config: &Config,
) -> Result<Report> {
    let addr = remote.target.addr();
    let snap = match cluster {
        Ok(c) => snapshot::gather(remote, c, config, true).await?,
        Err(why) => Snapshot::unreachable(addr.clone(), why),
    };
    Ok(Report::doctor(addr, doctor::all_checks(config, &snap)))
}

fn print(global: &GlobalArgs, report: &Report) -> Result<()> {
    if global.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", doctor::render_doctor(report));
    }
    Ok(())
}

fn exit(report: &Report) -> ExitCode {
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(CHECKS_FAILED)
    }
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
fn plan(report: &Report) -> Vec<(&'static str, Action)> {
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

pub async fn run(global: &GlobalArgs, args: DoctorArgs) -> Result<ExitCode> {
    let (config, target, policy) = super::connection_settings(global, &args.conn)?;
    let remote = Remote::connect(target, policy).await?;
    let cluster = Cluster::connect(&remote).await.map_err(|e| {
        // The cause, without the advice lines (the check carries its own fix).
        let text = format!("{e:#}");
        text.lines().next().unwrap_or_default().to_string()
    });
    let mut report = examine(&remote, cluster.as_ref().map_err(|e| e.as_str()), &config).await?;
    if !args.fix {
        print(global, &report)?;
        remote.close().await;
        return Ok(exit(&report));
    }
    let todo = plan(&report);
    let cluster = match (&cluster, todo.is_empty()) {
        (Ok(c), false) => c,
        _ => {
            // Nothing --fix can do: the same report shape as after fixes, with none applied.
            if global.json {
                let r = FixReport {
                    before: &report,
                    fixes: &[],
                    after: &report,
                    ok: report.ok,
                };
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", doctor::render_doctor(&report));
                if !report.ok {
                    println!("\nNothing here that --fix can repair: the fixes above are for the operator.");
                }
            }
            remote.close().await;
            return Ok(exit(&report));
        }
    };
    if !global.json {
        print!("{}", doctor::render_doctor(&report));
    }
    eprintln!("\nrebox doctor --fix will, in this order (re-checking after each):");
    for (i, (_, a)) in todo.iter().enumerate() {
        eprintln!("  {}. {}", i + 1, a.describe(&config));
    }
    if !crate::ui::confirm("Apply these fixes?", global.yes)? {
        remote.close().await;
        anyhow::bail!(
            "not confirmed; nothing was changed\n  next: answer yes, or pass --yes in scripts"
        );
    }
    let before = report.clone();
    let backup = args.from.clone().map(|path| {
        let ids = args.key_identities.clone();
        Box::new(move || -> Result<Vec<SecretText>> {
            let (doc, how) = super::key::open_backup(&path, &ids)?;
            tracing::info!(file = %path.display(), how, "opened the offline backup");
            Ok(doc.unseal.shares.iter().map(|s| s.key.clone()).collect())
        }) as Box<dyn FnMut() -> Result<Vec<SecretText>>>
    });
    let mut key = KeyMaterial::new(backup);
    let mut applied: Vec<Applied> = vec![];
    let mut attempted: Vec<Action> = vec![];
    let mut todo = todo;
    // A fix can reveal the next step (unsealed Vault, then the store still degraded; a resumed
    // CronJob that has never run): up to three rounds, never the same fix twice.
    for round in 0..3 {
        if round > 0 {
            todo = plan(&report)
                .into_iter()
                .filter(|(_, a)| !attempted.contains(a) && blocked(a, &report, &config).is_none())
                .collect();
            if todo.is_empty() {
                break;
            }
            eprintln!(
                "
The re-check found more that --fix can repair:"
            );
            for (i, (_, a)) in todo.iter().enumerate() {
                eprintln!("  {}. {}", i + 1, a.describe(&config));
            }
            if !crate::ui::confirm("Apply these fixes too?", global.yes)? {
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
                    action.describe(&config)
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
            if let Some(why) = blocked(&action, &report, &config) {
                eprintln!("  - not now: {} ({why})", action.describe(&config));
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
            eprintln!("  - {}", action.describe(&config));
            let mut fixer = Fixer {
                remote: &remote,
                cluster,
                config: &config,
                key: &mut key,
            };
            let outcome = fixer.apply(&action).await;
            report = examine(&remote, Ok(cluster), &config).await?;
            let after = report
                .checks
                .iter()
                .find(|c| c.id == check_id)
                .map(|c| c.verdict);
            let (result, message) = match outcome {
                Ok(m) => ("applied", m),
                Err(e) => ("failed", format!("{e:#}")),
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
    remote.close().await;
    if global.json {
        let r = FixReport {
            before: &before,
            fixes: &applied,
            after: &report,
            ok: report.ok,
        };
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("\nAfter the fixes:");
        print!("{}", doctor::render_doctor(&report));
    }
    Ok(exit(&report))
}
