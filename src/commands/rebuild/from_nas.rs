//! `rebox rebuild --restore-from-nas`: the offline backup and the NAS read before anything on
//! the server changes (`crate::rebuild::from_nas::inputs`), the data-loss window shown and
//! asked about, the restore phases, then the report (printed, and as JSON next to the
//! laptop's journal, also after a failure).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::{confirm, context, dry_run};
use crate::cli::{GlobalArgs, RebuildArgs};
use crate::rebuild::from_nas::{closing, inputs, FLOW};
use crate::rebuild::{self, prepare, Ctx, RestoreState};

/// The offline backup: from --key-file, else asked for.
fn key_file(global: &GlobalArgs, args: &RebuildArgs) -> Result<PathBuf> {
    if let Some(p) = &args.key_file {
        return Ok(p.clone());
    }
    let prompt = "Offline backup file of the Vault unseal key (e.g. /media/usb/vault-key.age)";
    match crate::ui::ask_text(prompt, global.yes)? {
        Some(path) => Ok(PathBuf::from(path)),
        None => bail!(crate::next::hinted(
            "a restore needs the offline backup of Vault's unseal key",
            "pass --key-file FILE (and --key-identity FILE for a key-encrypted backup)"
        )),
    }
}

/// `rebox plan --restore-from-nas`: the table when the NAS can be read without changing the
/// server (an NFS client is there), else a note.
pub async fn show_table(global: &GlobalArgs, ctx: &mut Ctx, skip: &[String]) -> Result<()> {
    match inputs::read_nas(ctx, skip, false).await? {
        Some(table) => {
            if !global.json {
                println!("{}", table.render());
            }
            ctx.restore = Some(RestoreState {
                table,
                outcomes: Vec::new(),
            });
        }
        None => eprintln!("note: the server has no NFS client yet, so the NAS cannot be read without changing it; `rebox rebuild --restore-from-nas` installs nfs-common first and shows the backups before restoring anything"),
    }
    Ok(())
}

pub async fn run(global: &GlobalArgs, args: RebuildArgs) -> Result<ExitCode> {
    let mut ctx = context(global, &args).await?;
    let phases = rebuild::restore_phases();
    // The key and the secrets are settled before the server is changed in any way.
    if !args.dry_run {
        let path = key_file(global, &args)?;
        let doc = inputs::open_key(&path, &args.key_identities, &ctx.site.config.cluster_name)?;
        ctx.unseal_shares = Some(doc.shares());
        inputs::secret_values(&mut ctx, &doc, |name| {
            crate::ui::ask_secret(&format!("{name} (not in the offline backup)"), global.yes)
        })?;
    }
    let Some(table) = inputs::read_nas(&ctx, &args.skip_volumes, !args.dry_run).await? else {
        // Only a dry run gets here: it may not install the NFS client the read needs.
        eprintln!("note: the server has no NFS client yet; the backups are listed once a real run has installed nfs-common");
        return dry_run(global, &mut ctx, &phases).await;
    };
    let rendered = table.render();
    if global.json {
        eprint!("{rendered}");
    } else {
        print!("{rendered}");
    }
    let question = inputs::question(&ctx, &table);
    ctx.restore = Some(RestoreState {
        table,
        outcomes: Vec::new(),
    });
    if args.dry_run {
        return dry_run(global, &mut ctx, &phases).await;
    }
    confirm(global, &question, "rebox plan --restore-from-nas")?;
    let hint = "rebox rebuild --restore-from-nas";
    let (local, result) = prepare::run(&mut ctx, &phases, FLOW, hint).await?;
    let report_path = closing::report(&mut ctx, &result, &local.path, |report| {
        if global.json {
            if let Ok(text) = serde_json::to_string_pretty(report) {
                println!("{text}");
            }
        } else {
            match result.is_ok() {
                true => println!("Restore finished."),
                false => println!("Restore stopped (see the error below)."),
            }
            print!("{}", report.render());
        }
    })
    .await;
    ctx.site.remote.close().await;
    result?;
    println!("\nWhat to do next:");
    for line in closing::next_steps(&ctx, report_path.as_deref()) {
        println!("  - {line}");
    }
    Ok(ExitCode::SUCCESS)
}
