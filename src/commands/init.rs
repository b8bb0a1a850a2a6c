//! `rebox init`: writes a commented rebox.toml, asking for the few values that differ per lab.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::{GlobalArgs, InitArgs};
use crate::config::{Config, DEFAULT_FILE};
use crate::ui;

pub fn run(global: &GlobalArgs, args: InitArgs) -> Result<ExitCode> {
    let path = args
        .output
        .clone()
        .or_else(|| global.config.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FILE));
    if path.exists() && !args.force {
        anyhow::bail!(
            "{} already exists; pass --force to overwrite it, or -o to write elsewhere",
            path.display()
        );
    }
    let mut answers = Config::default();
    answers.server.user = Some("homelab".into());
    if !args.defaults {
        if !ui::interactive() {
            anyhow::bail!("`rebox init` needs a terminal to ask questions; pass --defaults to write the defaults");
        }
        ui::ask_init(&mut answers)?;
    }
    let text = answers.commented_toml()?;
    // Parse what we wrote, so a template mistake can never produce a broken file.
    Config::parse(&text, &path)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}; next: `rebox preflight`", path.display());
    Ok(ExitCode::SUCCESS)
}
