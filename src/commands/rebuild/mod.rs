//! `rebox plan` and `rebox rebuild`: flags to options, the context from
//! `crate::rebuild::prepare`, then list or run the phases and print.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{GlobalArgs, RebuildArgs};
use crate::flow::{self, PlanEntry};
use crate::rebuild::{self, prepare, Ctx, KeyBackup};
use crate::site::Site;

mod from_nas;

/// Connects and builds the rebuild's context from the flags.
async fn context(global: &GlobalArgs, args: &RebuildArgs) -> Result<Ctx> {
    let (config, target, policy) = super::connection_settings(global, &args.conn)?;
    if args.restore_from_nas && args.key_out.is_some() {
        anyhow::bail!(crate::next::hinted(
            "--key-out writes a NEW key's backup (fresh rebuild); a restore reads the existing one",
            "pass --key-file FILE (the offline backup of the Vault being restored)"
        ));
    }
    let key_backup = args.key_out.clone().map(|path| KeyBackup {
        path,
        recipients: args.key_recipients.clone(),
        recipients_files: args.key_recipients_files.clone(),
        identity_files: args.key_identities.clone(),
    });
    // The backup settings are checked before the server is touched.
    if let Some(b) = &key_backup {
        b.check()?;
    }
    let site = Site::connect(config, target, policy).await?;
    let options = prepare::Options {
        bundle: args.bundle.clone(),
        force: args.force,
        key_backup,
    };
    let mut ctx = prepare::context(site, options).await?;
    let yes = global.yes;
    ctx.confirm = Box::new(move |q| crate::ui::confirm(q, yes));
    Ok(ctx)
}

pub async fn plan(global: &GlobalArgs, args: RebuildArgs) -> Result<ExitCode> {
    let mut ctx = context(global, &args).await?;
    let phases = if args.restore_from_nas {
        from_nas::show_table(global, &mut ctx, &args.skip_volumes).await?;
        rebuild::restore_phases()
    } else {
        rebuild::fresh_phases()
    };
    let entries = flow::plan(&phases, &mut ctx).await?;
    if global.json && args.restore_from_nas {
        let out = serde_json::json!({
            "backups": ctx.restore.as_ref().map(|r| &r.table),
            "phases": entries,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_plan(global, &ctx, &entries)?;
    }
    ctx.site.remote.close().await;
    Ok(ExitCode::SUCCESS)
}

fn print_plan(global: &GlobalArgs, ctx: &Ctx, entries: &[PlanEntry]) -> Result<()> {
    if global.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        print!(
            "{}",
            flow::render_plan(&ctx.site.remote.target.addr(), entries)
        );
    }
    Ok(())
}

/// `--dry-run`: the phases and what each would do; nothing changes.
async fn dry_run(
    global: &GlobalArgs,
    ctx: &mut Ctx,
    phases: &[Box<dyn flow::Phase<Ctx>>],
) -> Result<ExitCode> {
    let entries = flow::plan(phases, ctx).await?;
    print_plan(global, ctx, &entries)?;
    eprintln!("dry run: nothing was changed");
    Ok(ExitCode::SUCCESS)
}

/// Asks before the server is changed; `--yes` answers for scripts.
fn confirm(global: &GlobalArgs, question: &str, plan: &str) -> Result<()> {
    if !crate::ui::confirm(question, global.yes)? {
        anyhow::bail!(crate::next::hinted(
            "not confirmed; nothing was changed",
            format!("answer yes, or pass --yes in scripts (`{plan}` shows what would happen)")
        ));
    }
    Ok(())
}

pub async fn run(global: &GlobalArgs, args: RebuildArgs) -> Result<ExitCode> {
    if args.restore_from_nas {
        return from_nas::run(global, args).await;
    }
    let mut ctx = context(global, &args).await?;
    let phases = rebuild::fresh_phases();
    if args.dry_run {
        return dry_run(global, &mut ctx, &phases).await;
    }
    let question = prepare::question(&ctx);
    confirm(global, &question, "rebox plan")?;
    let (_, result) = prepare::run(&mut ctx, &phases, "rebuild", "rebox rebuild").await?;
    let report = result?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render("Rebuild finished"));
        println!("\nWhat to do next:");
        for line in prepare::next_steps(&ctx) {
            println!("  - {line}");
        }
    }
    ctx.site.remote.close().await;
    Ok(ExitCode::SUCCESS)
}
