//! Vault on the fresh path: initialise it, put the new unseal key in the offline backup and
//! prove the backup decrypts BEFORE anything else relies on the key, then store the key in
//! the Secret the auto-unseal CronJob reads, and unseal.
//!
//! Never initialise a Vault that has data: an initialised Vault without our backup file is
//! refused, unless the unseal Secret holds a key that unseals it (a run stopped between init
//! and the backup). From init to the committed backup, signals wait ([`crate::shield`]); the
//! key goes to the Secret first, so only the instant between Vault's answer and that write
//! (well under a second) has the key in this process's memory alone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;

use super::Ctx;
use crate::flow::{Phase, Steps};
use crate::keys::backup;
use crate::keys::BackupDocument;
use crate::shield::Hold;
use crate::site::{progress_line, Stored};

/// Waits until Vault answers seal-status (its pod started), up to the deadline.
pub(super) async fn vault_answering(ctx: &mut Ctx) -> Result<crate::vault::SealStatus> {
    let budget = Duration::from_secs(ctx.site.config.vault.start_timeout_secs);
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        let attempt = async {
            ctx.site
                .vault()
                .await?
                .seal_status()
                .await
                .map_err(anyhow::Error::from)
        }
        .await;
        match attempt {
            Ok(status) => return Ok(status),
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(e.context(crate::next::hinted(
                    format!("Vault did not answer within {}s", budget.as_secs()),
                    format!(
                        "`kubectl -n {} describe pod {}` on the server (on a slow uplink raise [vault] start_timeout_secs)",
                        ctx.site.config.vault.namespace, ctx.site.config.vault.pod
                    ),
                )))
            }
            Err(e) => {
                tracing::debug!("Vault not answering yet: {e:#}");
                ctx.site.drop_vault();
                // Polling an external service's readiness; the pod watch cannot see Vault's API.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Vault initialised, its key in the verified offline backup.
pub struct Init;

#[async_trait]
impl Phase<Ctx> for Init {
    fn id(&self) -> &'static str {
        "vault-init"
    }
    fn title(&self) -> String {
        "Initialise Vault; write the unseal key to the offline backup and verify it".into()
    }
    async fn pending(&self, ctx: &mut Ctx) -> Result<bool> {
        let initialised = match ctx.site.vault().await {
            Ok(v) => v
                .seal_status()
                .await
                .map(|s| s.initialized)
                .unwrap_or(false),
            Err(_) => false,
        };
        Ok(!initialised || !ctx.key_backup()?.path.exists())
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        let vault = &ctx.site.config.vault;
        let answer = format!(
            "wait for Vault ({}/{}) to answer",
            vault.namespace, vault.service
        );
        let initialise = format!(
            "initialise it: {} share(s), threshold {}",
            vault.key_shares, vault.key_threshold
        );
        let second_copy = format!(
            "put the key in Secret {} at once (the second copy, on the server)",
            ctx.site.unseal_secret_name()
        );
        let out = ctx
            .key_backup()
            .map(|b| b.path.display().to_string())
            .unwrap_or_else(|e| format!("(not set: {e})"));
        let recover = format!("if it is already initialised: refuse, unless Secret {} holds a key that unseals it (a run stopped before its backup); then write {out} from that key", ctx.site.unseal_secret_name());
        let checks = format!("check {out} does not exist and can be written, and the identity opens what the recipients can read");
        let backup =
            format!("write the key to {out}, read it back and decrypt it, before anything else");

        let status = steps.run(answer, vault_answering(ctx)).await?;
        // A plan shows the refusal; a run takes it only when Vault has data.
        if steps.planning() || status.as_ref().is_some_and(|s| s.initialized) {
            let sealed = status.as_ref().is_none_or(|s| s.sealed);
            steps
                .run(recover, recover_interrupted_init(ctx, sealed))
                .await?;
            if !steps.planning() {
                return Ok(());
            }
        }
        // Everything that can fail without Vault is checked before init.
        steps.run(checks, async { check_destination(ctx) }).await?;
        steps
            .run_lines(
                [initialise, second_copy, backup],
                initialise_and_back_up(ctx),
            )
            .await?;
        Ok(())
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        let shares = ctx.shares_from_backup()?;
        anyhow::ensure!(!shares.is_empty(), "the offline backup holds no share");
        anyhow::ensure!(
            ctx.site.vault().await?.seal_status().await?.initialized,
            "Vault reports uninitialised after init"
        );
        Ok(())
    }
}

/// The offline backup's destination is writable and free, and the identity opens what the
/// recipients can read.
fn check_destination(ctx: &Ctx) -> Result<()> {
    let settings = ctx.key_backup()?;
    let path = &settings.path;
    if path.exists() {
        anyhow::bail!(crate::next::hinted(
            format!(
                "{} already exists and belongs to another Vault; a new key needs a new file",
                path.display()
            ),
            "pass --key-out NEW-FILE (keep the old backup)"
        ));
    }
    drop(crate::keys::output::Pending::create(path, false)?);
    backup::check_identities_match(&settings.recipients()?, &settings.identities()?)
}

/// sys/init, the key into the Secret, the verified offline backup.
async fn initialise_and_back_up(ctx: &mut Ctx) -> Result<()> {
    let path = ctx.key_backup()?.path.clone();
    let (shares, threshold) = (
        ctx.site.config.vault.key_shares,
        ctx.site.config.vault.key_threshold,
    );
    // Init answers with a root token too: its entry goes on the server's record first, so a
    // run that stops before the token is revoked leaves a trace the next run acts on.
    let pending_root = ctx.site.expect_root_token("init").await?;
    // From Vault's answer until the backup is committed the key exists nowhere else:
    // Ctrl-C, SIGTERM and a closed terminal wait for the backup.
    let hold = Hold::new("Vault's new unseal key is not in the offline backup yet");
    let init = ctx.site.vault().await?.init(shares, threshold).await?;
    hold.failpoint("vault-init:answered").await;
    // The second copy first: the Secret is on the server within a second and outlives
    // this laptop (a SIGKILL, a panic, a dead battery before the backup is written).
    let second_copy = ctx.site.write_unseal_secret(&init.keys).await;
    if let Err(e) = &second_copy {
        eprintln!("warning: could not put the new key in Secret {} yet ({e:#}); the offline backup is written next", ctx.site.unseal_secret_name());
    }
    crate::failpoint::exit_after("vault-init:secret-written");
    let doc = BackupDocument::new(
        &ctx.site.config.cluster_name,
        threshold,
        shares,
        init.keys.clone(),
        // No root token: rebox revokes it once Vault is set up for ESO (a new one is
        // made from the key when needed: `operator generate-root`).
        vec![],
    )?;
    let written = ctx.key_backup()?.write_verified(&doc);
    if let Err(e) = written {
        // Only an I/O failure can get here (the checks above passed).
        let next = match second_copy {
            Ok(()) => format!(
                "the key is in Secret {} instead; fix the destination, then `rebox key export -o {} -r …` and rerun `rebox rebuild`",
                ctx.site.unseal_secret_name(), path.display()
            ),
            Err(s) => format!("saving it to the Secret failed too ({s:#}); Vault must be initialised again by hand"),
        };
        return Err(e.context(format!(
            "Vault WAS initialised but its key could not be written to the offline backup: {next}"
        )));
    }
    eprintln!(
        "wrote the offline backup {} and verified that it decrypts",
        path.display()
    );
    ctx.unseal_shares = Some(init.keys);
    // In memory only (zeroized on drop), for the vault-for-eso phase, which revokes it.
    ctx.init_root_token = Some((pending_root, init.root_token));
    drop(hold);
    Ok(())
}

/// The unseal key in Secret `vault-unseal-key`, for the auto-unseal CronJob.
pub struct KeySecret;

#[async_trait]
impl Phase<Ctx> for KeySecret {
    fn id(&self) -> &'static str {
        "vault-key-secret"
    }
    fn title(&self) -> String {
        "Store the unseal key in the Secret the auto-unseal CronJob reads".into()
    }
    async fn pending(&self, ctx: &mut Ctx) -> Result<bool> {
        Ok(!matches!(
            ctx.site.read_unseal_secret().await,
            Ok(Stored::Shares(_))
        ))
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        let vault = &ctx.site.config.vault;
        let line = format!(
            "create Secret {}/{} (key `{}`) from the verified offline backup",
            vault.namespace, vault.unseal_secret, vault.unseal_secret_key
        );
        steps
            .run(line, async {
                let shares = ctx.shares_from_backup()?;
                ctx.site.write_unseal_secret(&shares).await
            })
            .await?;
        Ok(())
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        let shares = ctx.shares_from_backup()?;
        anyhow::ensure!(
            ctx.site.unseal_secret_holds(&shares).await?,
            "Secret {} does not hold the offline backup's key after it was written",
            ctx.site.unseal_secret_name()
        );
        Ok(())
    }
}

/// Vault unsealed now, not a CronJob minute later.
pub struct Unseal;

#[async_trait]
impl Phase<Ctx> for Unseal {
    fn id(&self) -> &'static str {
        "vault-unseal"
    }
    fn title(&self) -> String {
        "Unseal Vault".into()
    }
    async fn pending(&self, ctx: &mut Ctx) -> Result<bool> {
        Ok(match ctx.site.vault().await {
            Ok(v) => v.seal_status().await.map(|s| s.sealed).unwrap_or(true),
            Err(_) => true,
        })
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        let line = "submit the key share(s) from the offline backup to Vault's unseal API, through the SSH tunnel";
        steps
            .run(line, async {
                let shares = ctx.shares_from_backup()?;
                vault_answering(ctx).await?;
                ctx.site
                    .unseal(&shares, "the offline backup", |p| {
                        eprintln!("    {}", progress_line(&p))
                    })
                    .await
                    .context(crate::next::hinted("Vault did not accept the key from the offline backup: it stays sealed, and nothing was changed or deleted", "use the offline backup of THIS Vault (`rebox key verify FILE` shows its fingerprints and cluster), then rerun"))?;
                Ok(())
            })
            .await?;
        Ok(())
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        let status = ctx.site.vault().await?.seal_status().await?;
        anyhow::ensure!(!status.sealed, "Vault reports sealed after unsealing");
        Ok(())
    }
}

/// Vault is initialised but the offline backup at --key-out is missing: the run that
/// initialised it was stopped before the backup was committed (or the file was removed).
/// When the Secret holds a key that unseals this sealed Vault, that key is Vault's: the
/// backup is written from it and the rebuild goes on. Otherwise nothing is changed, and the
/// error says where the key may still be (the Secret, a leftover temporary file).
async fn recover_interrupted_init(ctx: &mut Ctx, sealed: bool) -> Result<()> {
    let path = ctx.key_backup()?.path.clone();
    let leftovers = leftover_temp_files(&path);
    let in_secret = ctx
        .site
        .read_unseal_secret()
        .await
        .ok()
        .and_then(Stored::shares);
    let secret = ctx.site.unseal_secret_name();
    let Some(shares) = in_secret.filter(|s| !s.is_empty()) else {
        let mut next = "for a node restored from backups use `rebox rebuild --restore-from-nas`; otherwise point --key-out at the backup of this Vault".to_string();
        if !leftovers.is_empty() {
            next = format!("{} may hold this Vault's key, encrypted, from an interrupted run: `rebox key verify FILE` opens it; if it does, rename it to {} and rerun; {next}", list(&leftovers), path.display());
        }
        anyhow::bail!(crate::next::hinted(format!("Vault is already initialised, {} (where this rebuild would have written its key) does not exist, and Secret {secret} holds no key: this Vault holds data rebox did not create; refusing to go on", path.display()), next));
    };
    if !sealed {
        anyhow::bail!(crate::next::hinted(
            format!("Vault is already initialised and unsealed, and {} does not exist: refusing to go on without a verified offline backup of its key", path.display()),
            format!("make the offline backup from Secret {secret}: `rebox key export -o {} -r …` (check it with `rebox key verify {} --against-cluster`), then rerun", path.display(), path.display()),
        ));
    }
    eprintln!("Vault was initialised by a run that stopped before the offline backup was written; trying the key in Secret {secret}");
    if !ctx.site.try_unseal(&shares).await? {
        anyhow::bail!(crate::next::hinted(
            format!("Vault is initialised, {} does not exist, and the key in Secret {secret} does not unseal it; nothing was changed", path.display()),
            if leftovers.is_empty() { "find this Vault's offline backup and pass it with --key-out".to_string() } else { format!("{} may hold the key, encrypted: `rebox key verify FILE` opens it; if it does, rename it to {} and rerun", list(&leftovers), path.display()) },
        ));
    }
    let (threshold, count) = (ctx.site.config.vault.key_threshold, shares.len() as u32);
    let doc = BackupDocument::new(
        &ctx.site.config.cluster_name,
        threshold,
        count,
        shares.clone(),
        vec![],
    )?;
    ctx.key_backup()?.write_verified(&doc)?;
    eprintln!(
        "the key in Secret {secret} unsealed Vault; wrote the offline backup {} from it and verified that it decrypts",
        path.display()
    );
    ctx.unseal_shares = Some(shares);
    Ok(())
}

/// Temporary files an interrupted write of `path` may have left (`keys::output` names them
/// `.NAME.rebox-tmp-PID-RANDOM` beside it).
fn leftover_temp_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.rebox-tmp-", name.to_string_lossy());
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Opens the offline backup with the configured identities.
pub fn open_backup(ctx: &Ctx) -> Result<BackupDocument> {
    let settings = ctx.key_backup()?;
    backup::open_with_identities(&settings.path, &settings.identities()?)
        .with_context(|| format!("opening the offline backup {}", settings.path.display()))
}
