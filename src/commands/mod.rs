//! One file per subcommand; each is thin and calls into the modules that do the work.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command, ConnArgs, GlobalArgs};
use crate::config::Config;
use crate::remote::{known_hosts, HostKeyPolicy, Target};

mod doctor;
mod init;
mod key;
mod preflight;
mod rebuild;
mod rotate;
mod status;
mod unseal;

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let global = cli.global;
    match cli.command {
        Command::Init(args) => init::run(&global, args),
        Command::Preflight(args) => preflight::run(&global, args).await,
        Command::Plan(args) => rebuild::plan(&global, args).await,
        Command::Rebuild(args) => rebuild::run(&global, args).await,
        Command::Key(cmd) => key::run(&global, cmd).await,
        Command::RotateUnsealKey(args) => rotate::run(&global, args).await,
        Command::Status(args) => status::run(&global, args).await,
        Command::Doctor(args) => doctor::run(&global, args).await,
        Command::Unseal(args) => unseal::run(&global, args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "rebox", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints a command's result on stdout: as JSON under `--json`, else the human text.
fn emit<T: serde::Serialize + ?Sized>(
    global: &GlobalArgs,
    value: &T,
    human: impl FnOnce() -> String,
) -> Result<()> {
    if global.json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", human());
    }
    Ok(())
}

/// The config with connection flags applied, where to connect, and how to treat host keys.
pub fn connection_settings(
    global: &GlobalArgs,
    conn: &ConnArgs,
) -> Result<(Config, Target, HostKeyPolicy)> {
    let (mut config, _) = Config::load(global.config.as_deref())?;
    conn.apply_to(&mut config.server);
    let target = Target::resolve(&config.server)?;
    let known_hosts = match &config.server.known_hosts {
        Some(p) => p.clone(),
        None => known_hosts::default_path()?,
    };
    let policy = HostKeyPolicy {
        known_hosts,
        accept_new: conn.accept_new_host_key,
        replace: conn.replace_host_key.clone(),
        ask: (!global.yes && crate::ui::interactive()).then(|| {
            std::sync::Arc::new(crate::ui::Terminal) as std::sync::Arc<dyn crate::remote::Asker>
        }),
    };
    Ok((config, target, policy))
}
