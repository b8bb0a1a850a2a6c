//! The phases only `rebox rebuild --restore-from-nas` has: the guard against restoring onto a
//! cluster that already holds data, the volume restores, the check that Vault came back with
//! its data (never initialised here), and the bootstrap Secrets from the offline backup.
//! Before them, [`inputs`]; after them, [`closing`].

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::ListParams;
use kube::Api;
use serde_json::json;

use crate::flow::journal::{ServerStore, Store};
use crate::flow::{Phase, Steps};
use crate::rebuild::Ctx;
use crate::restore::longhorn::{self, Wanted};

pub mod closing;
pub mod inputs;

/// The journal's flow name for a restore (a fresh rebuild's journal is another flow).
pub const FLOW: &str = "rebuild --restore-from-nas";

/// Refuses to restore onto a cluster that already holds volumes or workloads, unless --force:
/// a restore that silently does nothing, or half-merges, is the worst outcome.
pub struct Guard;

impl Guard {
    /// What the cluster already holds that a restore could collide with.
    async fn occupants(ctx: &mut Ctx) -> Result<Vec<String>> {
        let cfg = ctx.site.config.clone();
        let client = ctx.site.cluster().await?.client.clone();
        let mut found = Vec::new();
        let vols = longhorn::api(&client, &cfg.longhorn.namespace, "Volume", "volumes");
        if let Ok(list) = vols.list(&ListParams::default()).await {
            found.extend(list.items.iter().map(|v| {
                format!(
                    "Longhorn volume {}",
                    v.metadata.name.clone().unwrap_or_default()
                )
            }));
        }
        let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
        for c in pvcs.list(&ListParams::default()).await?.items {
            found.push(format!(
                "PVC {}/{}",
                c.metadata.namespace.unwrap_or_default(),
                c.metadata.name.unwrap_or_default()
            ));
        }
        // The charts' own workloads are expected; anything else is an app.
        let system = [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            cfg.longhorn.namespace.as_str(),
            cfg.vault.namespace.as_str(),
            cfg.eso.namespace.as_str(),
            cfg.argocd.namespace.as_str(),
        ];
        let deployments: Api<Deployment> = Api::all(client.clone());
        let statefulsets: Api<StatefulSet> = Api::all(client.clone());
        let mut workloads: Vec<(String, String, &str)> = Vec::new();
        for d in deployments.list(&ListParams::default()).await?.items {
            workloads.push((
                d.metadata.namespace.unwrap_or_default(),
                d.metadata.name.unwrap_or_default(),
                "Deployment",
            ));
        }
        for s in statefulsets.list(&ListParams::default()).await?.items {
            workloads.push((
                s.metadata.namespace.unwrap_or_default(),
                s.metadata.name.unwrap_or_default(),
                "StatefulSet",
            ));
        }
        found.extend(
            workloads
                .into_iter()
                .filter(|(ns, _, _)| !system.contains(&ns.as_str()))
                .map(|(ns, name, kind)| format!("{kind} {ns}/{name}")),
        );
        Ok(found)
    }
}

const GUARD_ID: &str = "restore-guard";

impl Guard {
    async fn refuse_occupied(ctx: &mut Ctx) -> Result<()> {
        let installed = ctx
            .site
            .remote
            .sudo(&format!("test -e {}", crate::cluster::K3S_KUBECONFIG))
            .await?
            .success();
        if !installed {
            return Ok(()); // a fresh server: nothing to collide with
        }
        let remote = ctx.site.remote.clone();
        let ours = ServerStore { remote: &remote }
            .load()
            .await
            .ok()
            .flatten()
            .is_some_and(|j| j.flow == FLOW && j.is_done(GUARD_ID));
        if ours {
            return Ok(()); // an earlier run of this restore passed here: its volumes are expected
        }
        let occupants = match Self::occupants(ctx).await {
            Ok(o) => o,
            Err(e) if ctx.force => {
                eprintln!("warning: could not list what the cluster holds ({e:#}); going on because of --force");
                return Ok(());
            }
            Err(e) => {
                return Err(e.context(crate::next::hinted("k3s is installed but rebox cannot list what the cluster holds, so it cannot prove a restore is safe", "start k3s, or pass --force if this cluster is expendable")))
            }
        };
        if occupants.is_empty() || ctx.force {
            if !occupants.is_empty() {
                eprintln!(
                    "warning: --force: restoring onto a cluster that holds {} object(s) (e.g. {})",
                    occupants.len(),
                    occupants[0]
                );
            }
            return Ok(());
        }
        let shown: Vec<&str> = occupants.iter().take(6).map(String::as_str).collect();
        bail!(crate::next::hinted(format!("this cluster already holds data: {}{}\n  A restore onto it could silently keep the wrong data or half-merge.", shown.join(", "), if occupants.len() > shown.len() {
                format!(" and {} more", occupants.len() - shown.len())
            } else {
                String::new()
            }), "restore onto a freshly installed server, or pass --force if everything on this cluster is expendable"))
    }
}

#[async_trait]
impl Phase<Ctx> for Guard {
    fn id(&self) -> &'static str {
        GUARD_ID
    }
    fn title(&self) -> String {
        "Check the cluster holds no volumes or workloads a restore would collide with".into()
    }
    async fn pending(&self, _: &mut Ctx) -> Result<bool> {
        Ok(true) // always checked: it is read-only
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        let line = "on a server that already runs k3s (not from an earlier run of this restore), refuse if it holds Longhorn volumes, PVCs or app workloads (unless --force)";
        steps.run(line, Self::refuse_occupied(ctx)).await?;
        Ok(())
    }
    async fn verify(&self, _: &mut Ctx) -> Result<()> {
        Ok(())
    }
}

/// Every backed-up volume restored from its newest backup, with its PV and PVC.
pub struct Volumes;

impl Volumes {
    fn wanted(ctx: &Ctx) -> Vec<Wanted> {
        ctx.restore
            .as_ref()
            .map(|r| r.table.to_restore().map(Wanted::from).collect())
            .unwrap_or_default()
    }

    async fn restore(ctx: &mut Ctx) -> Result<()> {
        let wanted = Self::wanted(ctx);
        let (ns, replicas, concurrency) = (
            ctx.site.config.longhorn.namespace.clone(),
            ctx.site.config.longhorn.replica_count,
            ctx.site.config.restore.concurrency,
        );
        let client = ctx.site.cluster().await?.client.clone();
        let deadlines = longhorn::Deadlines::from(&ctx.site.config.restore);
        let outcomes =
            longhorn::restore_all(&client, &ns, replicas, &wanted, concurrency, &deadlines).await?;
        let failed: Vec<String> = outcomes
            .iter()
            .filter(|o| o.error.is_some())
            .map(|o| format!("{}: {}", o.volume, o.error.as_deref().unwrap_or_default()))
            .collect();
        if let Some(r) = ctx.restore.as_mut() {
            r.outcomes = outcomes;
        }
        if !failed.is_empty() {
            bail!(crate::next::hinted(format!("{} of {} volume(s) did not restore (the others did and stay restored):\n    {}", failed.len(), wanted.len(), failed.join("\n    ")), "a rerun retries only these; a backup that is corrupt on the NAS can be left out with --skip-volume NAME (its app then starts without its data)"));
        }
        Ok(())
    }
}

#[async_trait]
impl Phase<Ctx> for Volumes {
    fn id(&self) -> &'static str {
        "restore-volumes"
    }
    fn title(&self) -> String {
        "Restore every volume from its newest NAS backup; recreate its PV and PVC".into()
    }
    async fn pending(&self, ctx: &mut Ctx) -> Result<bool> {
        let wanted = Self::wanted(ctx);
        let ns = ctx.site.config.longhorn.namespace.clone();
        let Ok(cluster) = ctx.site.cluster().await else {
            return Ok(true);
        };
        let client = cluster.client.clone();
        for w in &wanted {
            if !longhorn::is_restored(&client, &ns, w)
                .await
                .unwrap_or(false)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        let wanted = Self::wanted(ctx);
        let count = match &ctx.restore {
            Some(_) => format!("{} volume(s)", wanted.len()),
            None => "every volume on the NAS (listed once the server can read it)".into(),
        };
        let mut lines = vec![
            format!("wait for Longhorn's BackupTarget default (made by its manager once it runs; up to {}s), ask it to read the NAS now, wait for every volume's BackupVolume and newest Completed Backup (up to {}s)", ctx.site.config.restore.backup_target_timeout_secs, ctx.site.config.restore.discovery_timeout_secs),
            format!(
                "restore {count}, {} at a time, each into a Volume of the same name (fromBackup) with its backup's access mode and its own recurring jobs (restoreVolumeRecurringJob: enabled)",
                ctx.site.config.restore.concurrency
            ),
        ];
        for w in &wanted {
            if let (Some(ns), Some(pvc)) = (&w.namespace, &w.pvc) {
                lines.push(format!("  {} → PV {} + PVC {ns}/{pvc}", w.volume, w.volume));
            } else {
                lines.push(format!("  {} (no PVC recorded: volume only)", w.volume));
            }
        }
        lines.push("rebox creates no recurring backup job; Longhorn skips a volume for its own jobs while it restores, and Argo CD (which may bring more) comes after every restore is checked".into());
        steps.run_lines(lines, Self::restore(ctx)).await?;
        Ok(())
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        let wanted = Self::wanted(ctx);
        let ns = ctx.site.config.longhorn.namespace.clone();
        let client = ctx.site.cluster().await?.client.clone();
        for w in &wanted {
            anyhow::ensure!(
                longhorn::is_restored(&client, &ns, w).await?,
                "volume {} is not restored and bound after its restore",
                w.volume
            );
        }
        Ok(())
    }
}

/// Vault, installed onto its restored volume, must report initialised (and sealed).
pub struct VaultRestored;

#[async_trait]
impl Phase<Ctx> for VaultRestored {
    fn id(&self) -> &'static str {
        "vault-restored"
    }
    fn title(&self) -> String {
        "Check Vault found its restored data (it is never initialised on a restore)".into()
    }
    async fn pending(&self, _: &mut Ctx) -> Result<bool> {
        Ok(true) // read-only, and the reason a restore must stop
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        let line = format!(
            "wait for Vault to answer; stop with an error if it reports uninitialised (PVC {}/{} did not bring its data back)",
            ctx.site.config.vault.namespace, ctx.site.config.vault.pvc
        );
        steps
            .run(line, async {
                let status = crate::rebuild::vault::vault_answering(ctx).await?;
                if !status.initialized {
                    bail!(crate::next::hinted(format!("Vault reports UNINITIALISED after the restore: its volume (PVC {}/{}) did not bring its data back. rebox never initialises Vault on a restore (that would make a new, empty Vault).", ctx.site.config.vault.namespace, ctx.site.config.vault.pvc), format!("check the table above lists {} with a recent backup and that it restored; `kubectl -n {} describe pvc {}` on the server", ctx.site.config.vault.pvc, ctx.site.config.vault.namespace, ctx.site.config.vault.pvc)));
                }
                Ok(())
            })
            .await?;
        Ok(())
    }
    async fn verify(&self, _: &mut Ctx) -> Result<()> {
        Ok(())
    }
}

/// The Secrets listed in `[[bootstrap_secrets]]`, filled from the offline backup or prompts.
pub struct BootstrapSecrets;

impl BootstrapSecrets {
    fn objects(ctx: &Ctx) -> Result<Vec<serde_json::Value>> {
        use base64::Engine;
        let mut grouped: BTreeMap<(String, String), serde_json::Map<String, serde_json::Value>> =
            BTreeMap::new();
        for s in &ctx.site.config.bootstrap_secrets {
            let value = ctx.secret_values.get(&s.source).with_context(|| {
                format!("no value for the bootstrap secret {:?} (it was not in the offline backup and not asked for)", s.source)
            })?;
            grouped
                .entry((s.namespace.clone(), s.secret.clone()))
                .or_default()
                .insert(
                    s.key.clone(),
                    base64::engine::general_purpose::STANDARD
                        .encode(value.expose())
                        .into(),
                );
        }
        let mut out = Vec::new();
        for ((ns, name), data) in grouped {
            out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
            out.push(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "rebox"}},
                "type": "Opaque",
                "data": data,
            }));
        }
        Ok(out)
    }
}

#[async_trait]
impl Phase<Ctx> for BootstrapSecrets {
    fn id(&self) -> &'static str {
        "bootstrap-secrets"
    }
    fn title(&self) -> String {
        "Create the bootstrap Secrets from the offline backup".into()
    }
    async fn pending(&self, ctx: &mut Ctx) -> Result<bool> {
        if ctx.site.config.bootstrap_secrets.is_empty() {
            return Ok(false);
        }
        let secrets: Vec<serde_json::Value> = ctx
            .site
            .config
            .bootstrap_secrets
            .iter()
            .map(|s| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": s.secret, "namespace": s.namespace}}))
            .collect();
        let Ok(cluster) = ctx.site.cluster().await else {
            return Ok(true); // no cluster yet (a plan before k3s)
        };
        Ok(!cluster.all_exist(&secrets).await.unwrap_or(false))
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        if ctx.site.config.bootstrap_secrets.is_empty() {
            let line = "none configured ([[bootstrap_secrets]] in rebox.toml)";
            steps.run(line, async { Ok(()) }).await?;
            return Ok(());
        }
        let lines = ctx.site.config.bootstrap_secrets.iter().map(|s| {
            format!(
                "Secret {}/{} key {} from the backup's extra secret {:?} (or a prompt)",
                s.namespace, s.secret, s.key, s.source
            )
        });
        let lines: Vec<String> = lines.collect();
        steps
            .run_lines(lines, async {
                let objects = Self::objects(ctx)?;
                ctx.site.cluster().await?.apply_all(&objects).await
            })
            .await?;
        Ok(())
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        anyhow::ensure!(
            !self.pending(ctx).await?,
            "a bootstrap Secret is missing after it was created"
        );
        Ok(())
    }
}
