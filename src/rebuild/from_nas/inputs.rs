//! A restore's inputs, all settled before the server changes in any way: the offline backup
//! opened and checked against rebox.toml, the values of the bootstrap Secrets, and the
//! data-loss table read from the NAS through the server.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::keys::BackupDocument;
use crate::rebuild::Ctx;
use crate::restore::nas;
use crate::restore::table::Table;
use crate::secret::SecretText;

/// Opens and checks the offline backup before the server is touched, and says what it holds
/// (fingerprints only) on stderr.
pub fn open_key(path: &Path, identities: &[PathBuf], cluster: &str) -> Result<BackupDocument> {
    let (doc, how) = crate::keys::backup::open_file(path, identities)
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
/// secrets first, else `ask(name)` (which answers `None` when nobody can be asked).
pub fn secret_values(
    ctx: &mut Ctx,
    doc: &BackupDocument,
    mut ask: impl FnMut(&str) -> Result<Option<SecretText>>,
) -> Result<()> {
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
        } else if let Some(value) = ask(&name)? {
            ctx.secret_values.insert(name, value);
        } else {
            missing.push(name);
        }
    }
    if !missing.is_empty() {
        bail!(crate::next::hinted(format!("the offline backup holds no {} and rebox cannot ask (non-interactive)", missing.join(", ")), "run interactively to type them, or add them to the backup (`rebox key export --extra-from-file NAME=FILE …`)"));
    }
    Ok(())
}

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

/// The question asked before a restore changes the server.
pub fn question(ctx: &Ctx, table: &Table) -> String {
    let t = &ctx.site.remote.target;
    let flagged = match table.flagged() {
        0 => String::new(),
        n => format!(", with {n} flagged above"),
    };
    format!(
        "Restore {} volume(s) onto {} ({}@{}){flagged}? This installs k3s and brings every volume back as of its last backup",
        table.to_restore().count(),
        t.alias,
        t.user,
        t.addr(),
    )
}
