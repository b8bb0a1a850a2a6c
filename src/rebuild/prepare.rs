//! Before any phase: the rebuild's context (one connection, the checked k3s binary, the
//! render inputs, the offline backup settings), and the phase run with both journals.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{k3s_binary, Ctx, KeyBackup};
use crate::flow::journal::{LocalStore, ServerStore};
use crate::flow::{self, Phase, RunOptions, RunReport};
use crate::manifests::{Artifacts, RenderInputs};
use crate::site::Site;

/// What the operator chose for this rebuild.
pub struct Options {
    /// An offline bundle directory (USB stick); else the k3s binary is downloaded.
    pub bundle: Option<PathBuf>,
    pub force: bool,
    /// The new key's offline backup (fresh rebuild only).
    pub key_backup: Option<KeyBackup>,
}

/// Finds the server's machine type and the k3s binary for it (from the bundle, else
/// downloaded into the laptop's cache, checked either way). `o.key_backup` must have passed
/// [`KeyBackup::check`] before the connection was opened.
pub async fn context(site: Site, o: Options) -> Result<Ctx> {
    let artifacts = Artifacts::embedded()?;
    let machine = site
        .remote
        .exec("uname -m")
        .await?
        .stdout_str()
        .trim()
        .to_string();
    let (k3s, inputs) = match o.bundle.as_deref() {
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
    let mut ctx = Ctx::new(site, artifacts, inputs, k3s, o.force);
    ctx.key_backup = o.key_backup;
    Ok(ctx)
}

/// Runs `phases` journalled on the server and on the laptop; returns the laptop's journal
/// (the restore writes its report beside it) and the outcome.
pub async fn run(
    ctx: &mut Ctx,
    phases: &[Box<dyn Phase<Ctx>>],
    flow_name: &str,
    resume_hint: &str,
) -> Result<(LocalStore, Result<RunReport>)> {
    let local = LocalStore::for_host(&ctx.site.remote.target.host)?;
    let remote = ctx.site.remote.clone();
    let server = ServerStore { remote: &remote };
    let opts = RunOptions {
        flow: flow_name.into(),
        resume_hint: resume_hint.into(),
    };
    let result = flow::run(phases, ctx, &[&server, &local], &opts).await;
    Ok((local, result))
}

/// The question asked before a fresh rebuild changes the server.
pub fn question(ctx: &Ctx) -> String {
    let t = &ctx.site.remote.target;
    format!(
        "Rebuild the homelab on {} ({}@{})? This installs k3s and changes the server",
        t.alias,
        t.user,
        t.addr()
    )
}

/// What the operator does after a successful fresh rebuild.
pub fn next_steps(ctx: &Ctx) -> Vec<String> {
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
