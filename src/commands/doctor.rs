//! `rebox doctor [--fix]`: parse, examine ([`crate::doctor::repair`]), print; `--fix` asks
//! before applying the planned fixes, then prints what each did and a fresh report.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{DoctorArgs, GlobalArgs};
use crate::doctor::fix::KeyMaterial;
use crate::doctor::repair;
use crate::doctor::{self, Report};
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
    if !global.json {
        print!("{}", doctor::render_doctor(&report));
    }
    let key = KeyMaterial::new(args.from.clone().map(|f| (f, args.key_identities.clone())));
    let fixed = repair::fix(site, report, key, |q| crate::ui::confirm(q, global.yes)).await?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&fixed)?);
    } else if fixed.nothing_to_fix {
        if !fixed.ok {
            println!("\nNothing here that --fix can repair: the fixes above are for the operator.");
        }
    } else {
        println!("\nAfter the fixes:");
        print!("{}", doctor::render_doctor(&fixed.after));
    }
    Ok(exit(&fixed.after))
}
