//! `rebox rotate-unseal-key`: flags to settings, the confirmation, the report. The work is in
//! `crate::rotate`. Progress goes to stderr, the report (or `--json`) to stdout; neither ever
//! holds a key, only SHA-256 fingerprints.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{ConnArgs, GlobalArgs, RotateArgs};
use crate::rotate::{self, Report, Settings, Ui};

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
    print_report(global, &report)?;
    Ok(ExitCode::SUCCESS)
}

fn print_report(global: &GlobalArgs, r: &Report) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if global.json {
        writeln!(out, "{}", serde_json::to_string_pretty(r)?)?;
        return Ok(());
    }
    if let Some(what) = &r.rolled_back {
        writeln!(out, "Earlier: {what}.")?;
    }
    writeln!(
        out,
        "Unseal key rotated on {} ({}){}:",
        r.server,
        r.cluster,
        if r.resumed {
            " — an interrupted rotation was finished"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "  new key          {} of {} shares needed",
        r.threshold, r.share_count
    )?;
    for (n, f) in r.new_fingerprints.iter().enumerate() {
        writeln!(out, "  share {:<10} sha256:{f}", n + 1)?;
    }
    writeln!(out, "  new backup       {}", r.new_backup.display())?;
    writeln!(out, "  Secret           {} (holds the new key)", r.secret)?;
    match &r.superseded_backup {
        Some(p) => writeln!(out, "  old backup       {} (superseded)", p.display())?,
        None => writeln!(out, "  old backup       none given (--from)")?,
    }
    writeln!(
        out,
        "  Vault            {}",
        if r.vault_healthy {
            "healthy, unsealed"
        } else {
            "NOT healthy: check `rebox status`"
        }
    )?;
    writeln!(out)?;
    writeln!(out, "What to do now:")?;
    for s in &r.next_steps {
        writeln!(out, "  - {s}")?;
    }
    Ok(())
}
