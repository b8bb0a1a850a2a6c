//! `rebox preflight`: read-only checks before a rebuild.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{GlobalArgs, PreflightArgs};

pub async fn run(_global: &GlobalArgs, _args: PreflightArgs) -> Result<ExitCode> {
    anyhow::bail!("not yet")
}
