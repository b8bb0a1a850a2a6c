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
        ask(&mut answers)?;
    }
    let text = answers.commented_toml()?;
    // Parse what we wrote, so a template mistake can never produce a broken file.
    Config::parse(&text, &path)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}; next: `rebox preflight`", path.display());
    Ok(ExitCode::SUCCESS)
}

fn ask(c: &mut Config) -> Result<()> {
    use dialoguer::Input;
    c.cluster_name = Input::new()
        .with_prompt("Cluster name")
        .default(c.cluster_name.clone())
        .interact_text()?;
    c.server.host = Input::new()
        .with_prompt("Server host (name, address or ~/.ssh/config alias)")
        .allow_empty(true)
        .interact_text()?;
    c.server.user = Some(
        Input::new()
            .with_prompt("SSH user with passwordless sudo")
            .default("homelab".to_string())
            .interact_text()?,
    );
    c.nas.backup_target = Input::new()
        .with_prompt("Longhorn backup target on the NAS")
        .default(c.nas.backup_target.clone())
        .interact_text()?;
    c.argocd.repo_url = Input::new()
        .with_prompt("Git repository for Argo CD")
        .allow_empty(true)
        .interact_text()?;
    c.argocd.path = Input::new()
        .with_prompt("Path of the root app in the repository")
        .default(c.argocd.path.clone())
        .interact_text()?;
    Ok(())
}
