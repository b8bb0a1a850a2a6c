//! One file per subcommand; each is thin and calls into the modules that do the work.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};

mod init;
mod key;
mod preflight;

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let global = cli.global;
    match cli.command {
        Command::Init(args) => init::run(&global, args),
        Command::Preflight(args) => preflight::run(&global, args).await,
        Command::Key(cmd) => key::run(&global, cmd).await,
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
