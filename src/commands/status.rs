//! `rebox status [--watch]`: the recovery sequence as a checklist; `--watch` follows it live.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::cli::{GlobalArgs, StatusArgs};
use crate::doctor::{self, snapshot, watch, Report};
use crate::site::Site;

/// Exit status when a step is not healthy (1 is kept for errors of rebox itself).
pub const NOT_HEALTHY: u8 = 2;
/// Exit status after Ctrl-C, as shells report SIGINT.
const INTERRUPTED: u8 = 130;

pub async fn run(global: &GlobalArgs, args: StatusArgs) -> Result<ExitCode> {
    let (config, target, policy) = super::connection_settings(global, &args.conn)?;
    if args.watch {
        eprintln!(
            "watching the recovery on {} until everything is healthy (Ctrl-C to stop)",
            target.addr()
        );
        let mut out = std::io::stdout();
        let outcome = watch::run(
            &config,
            target,
            policy,
            global.json,
            args.timeout.map(Duration::from_secs),
            &mut out,
        )
        .await?;
        return Ok(match outcome {
            watch::Outcome::Healthy => ExitCode::SUCCESS,
            watch::Outcome::TimedOut => ExitCode::from(NOT_HEALTHY),
            watch::Outcome::Interrupted => ExitCode::from(INTERRUPTED),
        });
    }
    let site = Site::connect(config, target, policy).await?;
    let snap = snapshot::of(&site, false).await;
    site.close().await;
    let report = Report::status(
        site.remote.target.addr(),
        doctor::status_checks(&site.config, &snap?),
    );
    super::emit(global, &report, || doctor::render_status(&report))?;
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_HEALTHY)
    })
}
