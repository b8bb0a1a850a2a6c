//! k3s without the upstream install script: the checked binary uploaded, our own systemd unit
//! and /etc/rancher/k3s/config.yaml written, the service started, the node Ready.

use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;

use super::Ctx;
use crate::flow::{Phase, Steps};
use crate::manifests::{render_k3s_config, render_k3s_unit};
use crate::remote::{shell_quote, ExecOptions, UploadSpec};

use crate::manifests::{BINARY_PATH as BINARY, CONFIG_PATH as CONFIG, UNIT_PATH as UNIT};
pub const KUBECONFIG: &str = crate::cluster::K3S_KUBECONFIG;

/// How long k3s may take to write its kubeconfig and register a Ready node.
const START_DEADLINE: Duration = Duration::from_secs(180);

/// sha256 of a file on the server, or None when it does not exist.
async fn remote_sha256(ctx: &Ctx, path: &str) -> Result<Option<String>> {
    let out = ctx
        .site
        .remote
        .sudo(&format!("sha256sum {} 2>/dev/null", shell_quote(path)))
        .await?;
    Ok(out.success().then(|| {
        out.stdout_str()
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    }))
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// The k3s binary at /usr/local/bin/k3s with the expected sha256.
pub struct Binary;

#[async_trait]
impl Phase<Ctx> for Binary {
    fn id(&self) -> &'static str {
        "k3s-binary"
    }
    fn title(&self) -> String {
        "Upload the k3s binary (sha256 checked)".into()
    }
    async fn pending(&self, ctx: &mut Ctx) -> Result<bool> {
        Ok(remote_sha256(ctx, BINARY).await?.as_deref() != Some(ctx.k3s.sha256.as_str()))
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        let line = format!(
            "upload {} (k3s {}, sha256 {}) to {BINARY}, mode 0755",
            ctx.k3s.path.display(),
            ctx.k3s.version,
            &ctx.k3s.sha256[..16]
        );
        steps.run(line, upload_binary(ctx)).await?;
        Ok(())
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        let got = remote_sha256(ctx, BINARY).await?;
        anyhow::ensure!(
            got.as_deref() == Some(ctx.k3s.sha256.as_str()),
            "{BINARY} on the server does not have the expected sha256 after upload"
        );
        Ok(())
    }
}

async fn upload_binary(ctx: &Ctx) -> Result<()> {
    let spec = UploadSpec {
        local: &ctx.k3s.path,
        remote: BINARY,
        mode: 0o755,
        owner: "root:root",
    };
    let bar = crate::ui::bytes_bar(0, "uploading k3s");
    let uploaded = ctx
        .site
        .remote
        .upload_with_progress(&spec, &|sent, size| {
            bar.set_length(size);
            bar.set_position(sent);
        })
        .await;
    bar.finish_and_clear();
    uploaded.map(|_| ())
}

/// The systemd unit and config.yaml, rendered from rebox.toml.
pub struct Configuration;

fn rendered(ctx: &Ctx) -> Result<[(&'static str, String, &'static str); 2]> {
    Ok([
        (UNIT, render_k3s_unit(&ctx.site.config)?, "0644"),
        (CONFIG, render_k3s_config(&ctx.site.config)?, "0600"),
    ])
}

#[async_trait]
impl Phase<Ctx> for Configuration {
    fn id(&self) -> &'static str {
        "k3s-config"
    }
    fn title(&self) -> String {
        "Write the k3s systemd unit and config.yaml".into()
    }
    async fn pending(&self, ctx: &mut Ctx) -> Result<bool> {
        for (path, text, _) in rendered(ctx)? {
            if remote_sha256(ctx, path).await?.as_deref() != Some(sha256_hex(&text).as_str()) {
                return Ok(true);
            }
        }
        Ok(false)
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        for (path, text, mode) in rendered(ctx)? {
            steps
                .run(
                    format!("write {path} ({mode})"),
                    write_file(ctx, path, &text, mode),
                )
                .await?;
        }
        steps
            .run("systemctl daemon-reload", async {
                ctx.site.remote.sudo_ok("systemctl daemon-reload").await?;
                Ok(())
            })
            .await?;
        Ok(())
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        anyhow::ensure!(
            !self.pending(ctx).await?,
            "the k3s unit or config on the server differs from what was written"
        );
        Ok(())
    }
}

/// `text` at `path` with `mode`, written beside it and renamed into place.
async fn write_file(ctx: &Ctx, path: &str, text: &str, mode: &str) -> Result<()> {
    let script = format!(
        "set -e; mkdir -p \"$(dirname {p})\"; umask 077; cat > {p}.rebox-new; chmod {mode} {p}.rebox-new; mv -f {p}.rebox-new {p}",
        p = shell_quote(path)
    );
    let out = ctx
        .site
        .remote
        .sudo_with(
            &script,
            ExecOptions {
                stdin: Some(text.as_bytes()),
                quiet: false,
                ..Default::default()
            },
        )
        .await?;
    anyhow::ensure!(
        out.success(),
        "writing {path} failed: {}",
        out.stderr_str().trim()
    );
    Ok(())
}

/// k3s enabled and running, its kubeconfig written, the node Ready.
pub struct Running;

#[async_trait]
impl Phase<Ctx> for Running {
    fn id(&self) -> &'static str {
        "k3s-running"
    }
    fn title(&self) -> String {
        "Start k3s and wait for the node to be Ready".into()
    }
    async fn pending(&self, ctx: &mut Ctx) -> Result<bool> {
        if !ctx
            .site
            .remote
            .exec("systemctl is-active --quiet k3s")
            .await?
            .success()
        {
            return Ok(true);
        }
        let node = ctx.node_name().await?;
        match ctx.site.cluster().await {
            Ok(cluster) => {
                let api: kube::Api<k8s_openapi::api::core::v1::Node> =
                    kube::Api::all(cluster.client.clone());
                Ok(!crate::cluster::node_ready(
                    api.get_opt(&node).await?.as_ref(),
                ))
            }
            Err(_) => Ok(true),
        }
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        steps
            .run("systemctl enable --now k3s", async {
                ctx.site.drop_cluster();
                // A kubeconfig left by an earlier k3s (a --force takeover) would be read before
                // the new k3s writes its own: remove it when k3s is not running, so the wait
                // sees the new one.
                ctx.site
                    .remote
                    .sudo_ok(&format!(
                        "systemctl is-active --quiet k3s || rm -f {KUBECONFIG}; systemctl enable --now k3s"
                    ))
                    .await?;
                Ok(())
            })
            .await?;
        let line = format!(
            "wait for {KUBECONFIG}, then the node's Ready condition (up to {}s)",
            START_DEADLINE.as_secs()
        );
        steps.run(line, wait_started(ctx)).await?;
        Ok(())
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        anyhow::ensure!(
            !self.pending(ctx).await?,
            "k3s is not active, or the node is not Ready, after it started"
        );
        Ok(())
    }
}

/// k3s gives a client no signal but its kubeconfig, which appears once the API serves; then
/// the node registers and turns Ready.
async fn wait_started(ctx: &mut Ctx) -> Result<()> {
    let deadline = tokio::time::Instant::now() + START_DEADLINE;
    let wait = format!("i=0; while [ ! -s {KUBECONFIG} ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done; test -s {KUBECONFIG}");
    while !ctx.site.remote.sudo(&wait).await?.success() {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(crate::next::hinted(
                format!(
                    "k3s wrote no kubeconfig at {KUBECONFIG} within {}s",
                    START_DEADLINE.as_secs()
                ),
                "`sudo systemctl status k3s` and `sudo journalctl -u k3s` on the server"
            ));
        }
    }
    let node = ctx.node_name().await?;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    ctx.site.cluster().await?.wait_node_ready(&node, left).await
}
