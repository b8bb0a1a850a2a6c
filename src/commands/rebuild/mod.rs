//! `rebox plan` and `rebox rebuild`: prepare the rebuild context (connection, checked k3s
//! binary, render inputs), then list or run the phases.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::{GlobalArgs, RebuildArgs};
use crate::flow::journal::{LocalStore, ServerStore};
use crate::flow::{self, PlanEntry, RunOptions};
use crate::manifests::{Artifacts, RenderInputs};
use crate::rebuild::{self, k3s_binary, Ctx, KeyBackup};

mod from_nas;
use crate::site::Site;

pub(super) async fn prepare(global: &GlobalArgs, args: &RebuildArgs) -> Result<Ctx> {
    let (config, target, policy) = super::connection_settings(global, &args.conn)?;
    let artifacts = Artifacts::embedded()?;
    if args.restore_from_nas && args.key_out.is_some() {
        anyhow::bail!(crate::next::hinted(
            "--key-out writes a NEW key's backup (fresh rebuild); a restore reads the existing one",
            "pass --key-file FILE (the offline backup of the Vault being restored)"
        ));
    }
    let site = Site::connect(config, target, policy).await?;
    let machine = site
        .remote
        .exec("uname -m")
        .await?
        .stdout_str()
        .trim()
        .to_string();
    let (k3s, inputs) = match args.bundle.as_deref() {
        Some(bundle) => (
            k3s_binary::from_bundle(bundle, &artifacts, &machine).await?,
            RenderInputs::from_bundle(bundle, &artifacts)?,
        ),
        None => {
            let cache = dirs::cache_dir()
                .or_else(|| dirs::home_dir().map(|h| h.join(".cache")))
                .context("no cache directory for the k3s download; pass --bundle DIR")?
                .join("rebox");
            let k3s =
                k3s_binary::download(&artifacts, &machine, &site.config.k3s.release_url, &cache)
                    .await?;
            (k3s, RenderInputs::online())
        }
    };
    let mut ctx = Ctx::new(site, artifacts, inputs, k3s, args.force);
    if !args.restore_from_nas {
        ctx.key_backup = key_backup(args)?;
    }
    Ok(ctx)
}

/// The offline backup settings from the flags; all checked before the server is touched.
fn key_backup(args: &RebuildArgs) -> Result<Option<KeyBackup>> {
    let Some(path) = args.key_out.clone() else {
        return Ok(None);
    };
    let backup = KeyBackup {
        path,
        recipients: args.key_recipients.clone(),
        recipients_files: args.key_recipients_files.clone(),
        identity_files: args.key_identities.clone(),
    };
    // Everything readable and parseable now, not after Vault is initialised.
    if backup.recipients()?.is_empty() || backup.identities()?.is_empty() {
        anyhow::bail!("--key-out needs --key-recipient (or --key-recipients-file) and --key-identity, so the backup can be proven to decrypt");
    }
    Ok(Some(backup))
}

pub async fn plan(global: &GlobalArgs, args: RebuildArgs) -> Result<ExitCode> {
    let mut ctx = prepare(global, &args).await?;
    let phases = if args.restore_from_nas {
        // Read-only: without an NFS client on the server the table waits for the real run.
        match from_nas::read_nas(&ctx, &args.skip_volumes, false).await? {
            Some(table) => {
                if !global.json {
                    print!("{}", table.render());
                    println!();
                }
                ctx.restore = Some(rebuild::RestoreState {
                    table,
                    outcomes: Vec::new(),
                });
            }
            None => eprintln!("note: the server has no NFS client yet, so the NAS cannot be read without changing it; `rebox rebuild --restore-from-nas` installs nfs-common first and shows the backups before restoring anything"),
        }
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

pub(super) fn print_plan(global: &GlobalArgs, ctx: &Ctx, entries: &[PlanEntry]) -> Result<()> {
    if global.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    println!(
        "Rebuild plan for {} ({} phases):",
        ctx.site.remote.target.addr(),
        entries.len()
    );
    for (i, e) in entries.iter().enumerate() {
        let mark = if e.pending { "todo" } else { "done" };
        println!("{:>2}. [{mark}] {}", i + 1, e.title);
        if e.pending {
            for step in &e.steps {
                println!("         - {step}");
            }
        }
    }
    Ok(())
}

pub async fn run(global: &GlobalArgs, args: RebuildArgs) -> Result<ExitCode> {
    if args.restore_from_nas {
        return from_nas::run(global, args).await;
    }
    let mut ctx = prepare(global, &args).await?;
    let phases = rebuild::fresh_phases();
    if args.dry_run {
        let entries = flow::plan(&phases, &mut ctx).await?;
        print_plan(global, &ctx, &entries)?;
        eprintln!("dry run: nothing was changed");
        return Ok(ExitCode::SUCCESS);
    }
    let question = format!(
        "Rebuild the homelab on {} ({}@{})? This installs k3s and changes the server",
        ctx.site.remote.target.alias,
        ctx.site.remote.target.user,
        ctx.site.remote.target.addr()
    );
    if !crate::ui::confirm(&question, global.yes)? {
        anyhow::bail!(crate::next::hinted(
            "not confirmed; nothing was changed",
            "answer yes, or pass --yes in scripts (`rebox plan` shows what would happen)"
        ));
    }
    let local = LocalStore::for_host(&ctx.site.remote.target.host)?;
    let report = {
        let remote = ctx.site.remote.clone();
        let server = ServerStore { remote: &remote };
        let opts = RunOptions {
            flow: "rebuild".into(),
            resume_hint: "rebox rebuild".into(),
        };
        flow::run(&phases, &mut ctx, &[&server, &local], &opts).await?
    };
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let total: u64 = report.phases.iter().map(|p| p.duration_ms).sum();
        println!("Rebuild finished in {:.1}s:", total as f64 / 1000.0);
        for p in &report.phases {
            let how = match p.outcome {
                flow::Outcome::Ran => format!("{:.1}s", p.duration_ms as f64 / 1000.0),
                flow::Outcome::AlreadyDone => "already done".into(),
            };
            println!("  {:<70} {how}", p.title);
        }
        println!();
        println!("What to do next:");
        for line in next_steps(&ctx) {
            println!("  - {line}");
        }
    }
    ctx.site.remote.close().await;
    Ok(ExitCode::SUCCESS)
}

/// What the operator does after a successful rebuild.
fn next_steps(ctx: &Ctx) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(b) = &ctx.key_backup {
        out.push(format!(
            "store the offline backup {} safely (off the server, e.g. the USB stick in a drawer); without it a sealed Vault cannot be opened",
            b.path.display()
        ));
        out.push(format!(
            "check it again later with `rebox key verify -i IDENTITY {}`",
            b.path.display()
        ));
    }
    out.push(format!(
        "watch Argo CD bring up the rest: `kubectl -n {} get applications` on the server",
        ctx.site.config.argocd.namespace
    ));
    out.push(
        "keep rebox.toml and the bundle with the backup: a rerun of `rebox rebuild` resumes or confirms every phase"
            .into(),
    );
    out
}
