//! `rebox doctor [--fix]`: parse, examine ([`crate::doctor::repair`]), print; `--fix` asks
//! before applying the planned fixes, then prints what each did and a fresh report.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{DoctorArgs, GlobalArgs};
use crate::doctor::fix::KeyMaterial;
use crate::doctor::repair::{self, FixReport};
use crate::doctor::{self, Report};
use crate::secret::SecretText;
use crate::site::Site;

/// Exit status when a check fails (1 is kept for errors of rebox itself).
const CHECKS_FAILED: u8 = 2;

fn print(global: &GlobalArgs, report: &Report) -> Result<()> {
    super::emit(global, report, || doctor::render_doctor(report))
}

fn exit(report: &Report) -> ExitCode {
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(CHECKS_FAILED)
    }
}

pub async fn run(global: &GlobalArgs, args: DoctorArgs) -> Result<ExitCode> {
    let (config, target, policy) = super::connection_settings(global, &args.conn)?;
    let site = Site::connect(config, target, policy).await?;
    let result = doctor(global, &args, &site).await;
    site.close().await;
    result
}

async fn doctor(global: &GlobalArgs, args: &DoctorArgs, site: &Site) -> Result<ExitCode> {
    let report = repair::examine(site).await?;
    if !args.fix {
        print(global, &report)?;
        return Ok(exit(&report));
    }
    let todo = repair::plan(&report);
    if todo.is_empty() || site.cluster().await.is_err() {
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
                println!(
                    "\nNothing here that --fix can repair: the fixes above are for the operator."
                );
            }
        }
        return Ok(exit(&report));
    }
    if !global.json {
        print!("{}", doctor::render_doctor(&report));
    }
    eprintln!("\nrebox doctor --fix will, in this order (re-checking after each):");
    for (i, (_, a)) in todo.iter().enumerate() {
        eprintln!("  {}. {}", i + 1, a.describe(&site.config));
    }
    if !crate::ui::confirm("Apply these fixes?", global.yes)? {
        anyhow::bail!(crate::next::hinted(
            "not confirmed; nothing was changed",
            "answer yes, or pass --yes in scripts"
        ));
    }
    let backup = args.from.clone().map(|path| {
        let ids = args.key_identities.clone();
        Box::new(move || -> Result<Vec<SecretText>> {
            let (doc, how) = crate::keys::backup::open_file(&path, &ids)?;
            tracing::info!(file = %path.display(), how, "opened the offline backup");
            Ok(doc.shares())
        }) as Box<dyn FnMut() -> Result<Vec<SecretText>>>
    });
    let before = report.clone();
    let (applied, report) = repair::repair(site, report, todo, KeyMaterial::new(backup), |q| {
        crate::ui::confirm(q, global.yes)
    })
    .await?;
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
