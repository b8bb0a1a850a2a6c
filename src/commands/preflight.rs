//! `rebox preflight`: read-only checks before a rebuild; exit 0 only when nothing blocks it.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{GlobalArgs, PreflightArgs};
use crate::preflight;

/// Exit status when a check fails (1 is kept for errors of rebox itself).
const CHECKS_FAILED: u8 = 2;

pub async fn run(global: &GlobalArgs, args: PreflightArgs) -> Result<ExitCode> {
    let (config, target, policy) = super::connection_settings(global, &args.conn)?;
    let addr = target.addr();
    let connection = crate::remote::Remote::connect(target, policy).await;
    let report = preflight::run(&config, &addr, connection, args.allow_os).await;
    super::emit(global, &report, || preflight::render(&report))?;
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(CHECKS_FAILED)
    })
}
