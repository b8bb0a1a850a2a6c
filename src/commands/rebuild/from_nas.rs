//! `rebox rebuild --restore-from-nas`: open the offline backup and read the NAS before
//! anything on the server changes, show the data-loss window and ask, run the restore phases,
//! then report (printed, and as JSON next to the laptop's journal, also after a failure).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::{prepare, print_plan};
use crate::cli::{GlobalArgs, RebuildArgs};
use crate::flow::journal::{LocalStore, ServerStore};
use crate::flow::{self, RunOptions};
use crate::keys::BackupDocument;
use crate::rebuild::{self, from_nas::FLOW, Ctx, RestoreState};
use crate::restore::nas;
use crate::restore::report::Report;
use crate::restore::table::Table;
use crate::secret::SecretText;

/// Reads the NAS through the server and builds the data-loss table. Without an NFS client
/// on the server: installs nfs-common first when `may_install`, else returns `None`.
pub async fn read_nas(ctx: &Ctx, skip: &[String], may_install: bool) -> Result<Option<Table>> {
    let target = ctx.site.config.nas.backup_target.trim().to_string();
    if target.is_empty() {
        bail!(crate::next::hinted("nas.backup_target is not set in rebox.toml", "set it to the NAS's Longhorn backup target, e.g. nfs://nas.lan:/volume1/longhorn-backups"));
    }
    if nas::nfs_source(&target).is_none() {
        bail!(crate::next::hinted(format!("the backup target {target} is not an nfs:// URL; --restore-from-nas reads NFS targets only in this version"), "restore S3/CIFS targets with Longhorn's UI after a fresh `rebox rebuild`"));
    }
    if !nas::server_has_nfs_client(&ctx.site.remote).await? {
        if !may_install {
            return Ok(None);
        }
        eprintln!("installing nfs-common on the server to read the NAS (the rebuild needs it anyway; nothing else changes yet)");
        let out = ctx
            .site
            .remote
            .sudo("export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq nfs-common")
            .await?;
        if !out.success() {
            bail!(crate::next::hinted(
                format!("installing nfs-common failed: {}", out.stderr_str().trim()),
                "check the server's apt sources and network (`sudo apt-get update`)"
            ));
        }
    }
    let volumes = nas::scan(&ctx.site.remote, &target).await?;
    if volumes.is_empty() {
        bail!(crate::next::hinted(format!("the NAS at {target} holds no Longhorn backups (no backupstore/volumes/*/volume.cfg): there is nothing to restore, and nothing on the server was changed"), "check nas.backup_target points at the directory Longhorn backed up to"));
    }
    for name in skip {
        if !volumes.iter().any(|v| &v.volume == name) {
            bail!("--skip-volume {name}: no such volume on the NAS");
        }
    }
    Ok(Some(Table::build(
        &target,
        &volumes,
        ctx.site.config.restore.max_backup_age_hours,
        skip,
        time::OffsetDateTime::now_utc(),
    )))
}

/// The offline backup: from --key-file, else asked for.
fn key_file(global: &GlobalArgs, args: &RebuildArgs) -> Result<PathBuf> {
    if let Some(p) = &args.key_file {
        return Ok(p.clone());
    }
    if global.yes || !crate::ui::interactive() {
        bail!(crate::next::hinted(
            "a restore needs the offline backup of Vault's unseal key",
            "pass --key-file FILE (and --key-identity FILE for a key-encrypted backup)"
        ));
    }
    let path: String = dialoguer::Input::new()
        .with_prompt("Offline backup file of the Vault unseal key (e.g. /media/usb/vault-key.age)")
        .interact_text()?;
    Ok(PathBuf::from(path))
}

/// Opens and checks the offline backup before the server is touched.
fn open_key(global: &GlobalArgs, args: &RebuildArgs, cluster: &str) -> Result<BackupDocument> {
    let path = key_file(global, args)?;
    let (doc, how) = crate::keys::backup::open_file(&path, &args.key_identities)
        .with_context(|| format!("opening the offline backup {}", path.display()))?;
    if doc.cluster != cluster {
        bail!(crate::next::hinted(
            format!(
                "{} is the backup of cluster {:?}, but rebox.toml is for {cluster:?}",
                path.display(),
                doc.cluster
            ),
            "pass the backup of this cluster, or fix cluster_name in rebox.toml"
        ));
    }
    let summary = doc.summary();
    eprintln!(
        "offline backup {} (opened with {how}): cluster {}, created {}, {} of {} share(s)",
        path.display(),
        summary.cluster,
        summary.created_at,
        summary.threshold,
        summary.share_count
    );
    for f in &summary.shares {
        eprintln!("  {:<12} sha256:{}", f.name, f.sha256);
    }
    Ok(doc)
}

/// Values for the bootstrap Secrets and the manifests' secret inputs: the backup's extra
/// secrets first, else a prompt (interactive only).
fn secret_values(global: &GlobalArgs, ctx: &mut Ctx, doc: &BackupDocument) -> Result<()> {
    let mut needed: BTreeSet<String> = ctx
        .site
        .config
        .bootstrap_secrets
        .iter()
        .map(|s| s.source.clone())
        .collect();
    for m in ctx.manifests()? {
        needed.extend(m.secret_inputs.iter().map(|i| i.source.clone()));
    }
    let mut missing = Vec::new();
    for name in needed {
        if let Some(extra) = doc.extra.iter().find(|e| e.name == name) {
            ctx.secret_values.insert(name, extra.value.clone());
        } else if !global.yes && crate::ui::interactive() {
            let value = dialoguer::Password::new()
                .with_prompt(format!("{name} (not in the offline backup)"))
                .interact()?;
            ctx.secret_values.insert(name, SecretText::new(value));
        } else {
            missing.push(name);
        }
    }
    if !missing.is_empty() {
        bail!(crate::next::hinted(format!("the offline backup holds no {} and rebox cannot ask (non-interactive)", missing.join(", ")), "run interactively to type them, or add them to the backup (`rebox key export --extra-from-file NAME=FILE …`)"));
    }
    Ok(())
}

pub async fn run(global: &GlobalArgs, args: RebuildArgs) -> Result<ExitCode> {
    let mut ctx = prepare(global, &args).await?;
    // The key and the secrets are settled before the server is changed in any way.
    if !args.dry_run {
        let doc = open_key(global, &args, &ctx.site.config.cluster_name)?;
        ctx.unseal_shares = Some(doc.shares());
        secret_values(global, &mut ctx, &doc)?;
    }
    let Some(table) = read_nas(&ctx, &args.skip_volumes, !args.dry_run).await? else {
        // Only a dry run gets here: it may not install the NFS client the read needs.
        eprintln!("note: the server has no NFS client yet; the backups are listed once a real run has installed nfs-common");
        return dry_run(global, &mut ctx).await;
    };
    let rendered = table.render();
    if global.json {
        eprint!("{rendered}");
    } else {
        print!("{rendered}");
    }
    let flagged = table.flagged();
    let count = table.to_restore().count();
    ctx.restore = Some(RestoreState {
        table,
        outcomes: Vec::new(),
    });
    if args.dry_run {
        return dry_run(global, &mut ctx).await;
    }
    let phases = rebuild::restore_phases();
    let question = format!(
        "Restore {count} volume(s) onto {} ({}@{}){}? This installs k3s and brings every volume back as of its last backup",
        ctx.site.remote.target.alias,
        ctx.site.remote.target.user,
        ctx.site.remote.target.addr(),
        if flagged > 0 {
            format!(", with {flagged} flagged above")
        } else {
            String::new()
        }
    );
    if !crate::ui::confirm(&question, global.yes)? {
        bail!(crate::next::hinted("not confirmed; nothing was changed", "answer yes, or pass --yes in scripts (`rebox plan --restore-from-nas` shows the same table)"));
    }
    let local = LocalStore::for_host(&ctx.site.remote.target.host)?;
    let result = {
        let remote = ctx.site.remote.clone();
        let server = ServerStore { remote: &remote };
        let opts = RunOptions {
            flow: FLOW.into(),
            resume_hint: "rebox rebuild --restore-from-nas".into(),
        };
        flow::run(&phases, &mut ctx, &[&server, &local], &opts).await
    };
    let report_path = report(global, &mut ctx, &local, &result).await;
    ctx.site.remote.close().await;
    result?;
    println!();
    println!("What to do next:");
    println!(
        "  - check the apps: Argo CD deploys them onto the restored volumes (`kubectl -n {} get applications` on the server)",
        ctx.site.config.argocd.namespace
    );
    println!("  - keep the offline backup file: Vault still uses the same unseal key");
    if let Some(p) = report_path {
        println!("  - the report is in {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `--dry-run`: the phases and what each would do; nothing changes.
async fn dry_run(global: &GlobalArgs, ctx: &mut Ctx) -> Result<ExitCode> {
    let entries = flow::plan(&rebuild::restore_phases(), ctx).await?;
    print_plan(global, ctx, &entries)?;
    eprintln!("dry run: nothing was changed");
    Ok(ExitCode::SUCCESS)
}

/// Prints the report and writes it next to the journal; returns where.
async fn report(
    global: &GlobalArgs,
    ctx: &mut Ctx,
    local: &LocalStore,
    result: &Result<flow::RunReport>,
) -> Option<PathBuf> {
    let (apps, recurring) = match ctx.site.cluster().await {
        Ok(c) => {
            let client = c.client.clone();
            let apps =
                crate::restore::report::app_states(&client, &ctx.site.config.argocd.namespace)
                    .await
                    .unwrap_or_default();
            let jobs = crate::restore::longhorn::api(
                &client,
                &ctx.site.config.longhorn.namespace,
                "RecurringJob",
                "recurringjobs",
            )
            .list(&Default::default())
            .await
            .map(|l| l.items.len());
            // Volumes restored by an earlier run: what Longhorn says about them now.
            if let Some(r) = ctx.restore.as_mut().filter(|r| r.outcomes.is_empty()) {
                let wanted: Vec<_> = r
                    .table
                    .to_restore()
                    .map(crate::restore::longhorn::Wanted::from)
                    .collect();
                r.outcomes = crate::restore::longhorn::observed(
                    &client,
                    &ctx.site.config.longhorn.namespace,
                    &wanted,
                )
                .await;
            }
            (apps, jobs.ok())
        }
        Err(_) => (Vec::new(), None),
    };
    let restore = ctx.restore.as_ref();
    let recurring_jobs = match recurring {
        Some(n) => format!(
            "rebox created no recurring backup job, and Argo CD (which may bring them) started only after every restore was checked; {n} recurring job(s) exist now"
        ),
        None => "not checked (the cluster did not answer)".into(),
    };
    let report = Report {
        host: ctx.site.remote.target.host.clone(),
        finished_at: crate::flow::journal::now(),
        succeeded: result.is_ok(),
        error: result.as_ref().err().map(crate::next::describe),
        phases: result.as_ref().ok(),
        backups: restore.map(|r| &r.table),
        volumes: restore.map(|r| r.outcomes.as_slice()).unwrap_or_default(),
        apps: &apps,
        recurring_jobs,
    };
    if global.json {
        if let Ok(text) = serde_json::to_string_pretty(&report) {
            println!("{text}");
        }
    } else {
        if result.is_ok() {
            println!("Restore finished.");
        } else {
            println!("Restore stopped (see the error below).");
        }
        print!("{}", report.render());
    }
    match report.write(&local.path) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("warning: could not write the report: {e:#}");
            None
        }
    }
}
