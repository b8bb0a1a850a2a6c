//! Host phases: the guard against clobbering someone else's k3s, and the packages and services
//! Longhorn needs (open-iscsi with iscsid running, nfs-common).

use anyhow::Result;
use async_trait::async_trait;

use super::Ctx;
use crate::flow::journal::SERVER_PATH;
use crate::flow::{Phase, Steps};

/// Files that mean k3s is (or was) installed.
const K3S_TRACES: &[&str] = &[
    "/usr/local/bin/k3s",
    "/etc/rancher/k3s/k3s.yaml",
    "/var/lib/rancher/k3s/server",
];

/// Refuses a server that already runs a k3s that rebox did not install, unless `--force`.
pub struct Guard;

#[async_trait]
impl Phase<Ctx> for Guard {
    fn id(&self) -> &'static str {
        "guard"
    }
    fn title(&self) -> String {
        "Check the server holds no k3s of its own".into()
    }
    async fn pending(&self, _: &mut Ctx) -> Result<bool> {
        Ok(true) // always checked: it is read-only
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        let line = format!(
            "refuse if any of {} exists without a rebox journal (unless --force)",
            K3S_TRACES.join(", ")
        );
        steps.run(line, refuse_foreign_k3s(ctx)).await?;
        Ok(())
    }
    async fn verify(&self, _: &mut Ctx) -> Result<()> {
        Ok(())
    }
}

async fn refuse_foreign_k3s(ctx: &Ctx) -> Result<()> {
    let script = format!(
        "for p in {}; do [ -e \"$p\" ] && echo \"$p\"; done; true",
        K3S_TRACES.join(" ")
    );
    let found = ctx.site.remote.sudo_ok(&script).await?;
    let found: Vec<&str> = found.lines().filter(|l| !l.is_empty()).collect();
    if found.is_empty() {
        return Ok(());
    }
    let ours = ctx
        .site
        .remote
        .sudo(&format!("test -s {SERVER_PATH}"))
        .await?
        .success();
    if ours || ctx.force {
        return Ok(());
    }
    anyhow::bail!(crate::next::hinted(format!("this server already has k3s ({}) that rebox did not install; a rebuild will not clobber it", found.join(", ")), "rebuild onto a freshly installed server, or pass --force if this k3s is expendable"))
}

/// open-iscsi + nfs-common installed, iscsid enabled and running, iscsi_tcp loaded at boot.
pub struct Prerequisites;

const PACKAGES: &str = "open-iscsi nfs-common";

async fn missing(ctx: &Ctx) -> Result<bool> {
    let script = format!(
        "for p in {PACKAGES}; do dpkg-query -W -f='${{db:Status-Abbrev}}' $p 2>/dev/null | grep -q '^ii' || echo $p; done; systemctl is-active --quiet iscsid || echo iscsid"
    );
    Ok(!ctx
        .site
        .remote
        .exec(&script)
        .await?
        .stdout_str()
        .trim()
        .is_empty())
}

#[async_trait]
impl Phase<Ctx> for Prerequisites {
    fn id(&self) -> &'static str {
        "host-prerequisites"
    }
    fn title(&self) -> String {
        "Install the packages Longhorn needs (open-iscsi, nfs-common) and start iscsid".into()
    }
    async fn pending(&self, ctx: &mut Ctx) -> Result<bool> {
        missing(ctx).await
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        let lines = [
            format!("apt-get install -y {PACKAGES}"),
            "systemctl enable --now iscsid".into(),
            "load iscsi_tcp at boot (/etc/modules-load.d/rebox-longhorn.conf)".into(),
        ];
        steps.run_lines(lines, install_prerequisites(ctx)).await?;
        Ok(())
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        anyhow::ensure!(
            !missing(ctx).await?,
            "open-iscsi, nfs-common or iscsid still missing after install"
        );
        Ok(())
    }
}

async fn install_prerequisites(ctx: &Ctx) -> Result<()> {
    let script = format!(
        "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq {PACKAGES}; \
         systemctl enable --now iscsid; echo iscsi_tcp > /etc/modules-load.d/rebox-longhorn.conf"
    );
    let out = ctx.site.remote.sudo(&script).await?;
    if !out.success() {
        anyhow::bail!(crate::next::hinted(
            format!("installing {PACKAGES} failed: {}", out.stderr_str().trim()),
            "check the server's apt sources and network (`sudo apt-get update`)"
        ));
    }
    Ok(())
}
