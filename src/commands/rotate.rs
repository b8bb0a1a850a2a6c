//! `rebox rotate-unseal-key`: flags to settings, the confirmation, the report. The work is in
//! `crate::rotate`. Progress goes to stderr, the report (or `--json`) to stdout; neither ever
//! holds a key, only SHA-256 fingerprints.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{ConnArgs, GlobalArgs, RotateArgs};
use crate::rotate::{self, Settings, Ui};

pub async fn run(global: &GlobalArgs, args: RotateArgs) -> Result<ExitCode> {
    let (config, target, policy) = super::connection_settings(global, &ConnArgs::from(&args.conn))?;
    let settings = Settings {
        from: args.from,
        output: args.output,
        recipients: args.recipients,
        recipients_files: args.recipients_files,
        identity_files: args.identities,
        passphrase: args.passphrase,
        shares: args.shares,
        threshold: args.threshold,
        resume: args.resume,
        cancel_existing: args.cancel_existing,
    };
    let yes = global.yes;
    let progress = |line: &str| eprintln!("rotate: {line}");
    let confirm = |question: &str| crate::ui::confirm(question, yes);
    let ui = Ui {
        progress: &progress,
        confirm: &confirm,
    };
    let report = rotate::run(&settings, config, target, policy, &ui).await?;
    super::emit(global, &report, || report.render())?;
    Ok(ExitCode::SUCCESS)
}
