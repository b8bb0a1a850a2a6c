//! `rebox key export | verify | show` (issue 3).

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{GlobalArgs, KeyCommand};

pub async fn run(_global: &GlobalArgs, _cmd: KeyCommand) -> Result<ExitCode> {
    anyhow::bail!("`rebox key` is not implemented yet")
}
