//! The guide's fixes, applied by `rebox doctor --fix`. Each waits (a watch with a deadline)
//! for the state it is meant to produce and fails with what it saw instead.

use std::path::PathBuf;
use std::time::Duration;

use crate::site::eso_auth::{RoleState, Setup};
use anyhow::{bail, Context, Result};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::Api;
use serde_json::json;

use super::checks::{app_ok, app_problem};
use super::snapshot::job_log_tail;
use super::Action;
use crate::secret::SecretText;
use crate::site::readiness::{
    app_resource, rollout_restart, store_ready, store_resource, store_state,
};
use crate::site::{progress_line, Site, Stored, Unsealed};

/// How long a fix waits for its result.
const DEADLINE: Duration = Duration::from_secs(120);
/// How long vault-0 gets to turn Ready after an unseal.
const VAULT_READY: Duration = Duration::from_secs(60);
const REFRESH: &str = "argocd.argoproj.io/refresh";
/// How long a hard-refreshed app whose sync failed gets to recover before the fix reports it.
const SYNC_GRACE: Duration = Duration::from_secs(10);

/// No sync running, and the last one failed or the app reports an error condition.
fn app_failed(o: &DynamicObject) -> bool {
    let st = &o.data["status"];
    let phase = st["operationState"]["phase"].as_str().unwrap_or("");
    let error_condition = st["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"].as_str().is_some_and(|t| t.ends_with("Error")))
    });
    phase != "Running" && (matches!(phase, "Failed" | "Error") || error_condition)
}

/// Where the unseal key comes from when a fix needs it: the Secret, else the offline backup
/// (opened on first use, so nothing is asked for when no fix needs it).
pub struct KeyMaterial {
    /// The offline backup file and the identities that open it (`--from`, `-i`).
    backup: Option<(PathBuf, Vec<PathBuf>)>,
    loaded: Option<Vec<SecretText>>,
}

impl KeyMaterial {
    pub fn new(backup: Option<(PathBuf, Vec<PathBuf>)>) -> Self {
        KeyMaterial {
            backup,
            loaded: None,
        }
    }

    /// The shares of the offline backup, if one was given.
    pub fn backup(&mut self) -> Result<Option<Vec<SecretText>>> {
        if self.loaded.is_none() {
            if let Some((path, ids)) = &self.backup {
                let (doc, how) = crate::keys::backup::open_file(path, ids)?;
                tracing::info!(file = %path.display(), how, "opened the offline backup");
                self.loaded = Some(doc.shares());
            }
        }
        Ok(self.loaded.clone())
    }
}

/// What the fixes need.
pub struct Fixer<'a> {
    pub site: &'a Site,
    pub key: &'a mut KeyMaterial,
}

/// Waits for `cond` on the named object, up to `deadline`; false on timeout.
async fn wait_for<K>(
    api: Api<K>,
    name: &str,
    deadline: Duration,
    cond: impl kube::runtime::wait::Condition<K>,
) -> Result<bool>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(deadline, await_condition(api, name, cond)).await {
        Ok(r) => {
            r.with_context(|| format!("watching {name}"))?;
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

impl Fixer<'_> {
    /// Applies one fix and waits for its effect. Ok(message) says what was done.
    pub async fn apply(&mut self, action: &Action) -> Result<String> {
        match action {
            Action::RebindVolume { pv } => self.rebind(pv).await,
            Action::Unseal => self.unseal().await,
            Action::RecreateSecret => self.recreate_secret().await,
            Action::ResumeCronJob { namespace, name } => self.resume(namespace, name).await,
            Action::RunCronJob { namespace, name } => self.run_cronjob(namespace, name).await,
            Action::RestartEso => self.restart_eso().await,
            Action::ReadyVaultForEso => self.ready_vault_for_eso().await,
            Action::RefreshApps { apps } => self.refresh(apps).await,
        }
    }

    async fn rebind(&self, pv: &str) -> Result<String> {
        let (ns, name) = (
            &self.site.config.vault.namespace,
            &self.site.config.vault.pvc,
        );
        let pvs: Api<PersistentVolume> = Api::all(self.site.cluster().await?.client.clone());
        let patch = json!({"spec": {"claimRef": {"uid": null, "resourceVersion": null}}});
        pvs.patch(pv, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("clearing the old claim's uid from PersistentVolume {pv}"))?;
        let pvcs: Api<PersistentVolumeClaim> =
            Api::namespaced(self.site.cluster().await?.client.clone(), ns);
        let bound = |p: Option<&PersistentVolumeClaim>| {
            p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Bound")
        };
        if !wait_for(pvcs, name, Duration::from_secs(60), bound).await? {
            bail!(
                "PVC {ns}/{name} did not bind to {pv} within 60s after the PV's claim was cleared"
            );
        }
        Ok(format!("PVC {ns}/{name} is Bound to {pv} again"))
    }

    /// The key: from the Secret when it holds one, else from the offline backup.
    async fn shares(&mut self) -> Result<(Vec<SecretText>, String)> {
        // An unreadable Secret is what the backup is for: fall through to it.
        if let Ok(Stored::Shares(shares)) = self.site.read_unseal_secret().await {
            if !shares.is_empty() {
                return Ok((shares, format!("Secret {}", self.site.unseal_secret_name())));
            }
        }
        match self.key.backup()? {
            Some(shares) => Ok((shares, "the offline backup".into())),
            None => bail!(crate::next::hinted(
                format!(
                    "no unseal key: Secret {} does not hold one and no offline backup was given",
                    self.site.unseal_secret_name()
                ),
                "rerun with --from vault-key.age --key-identity IDENTITY"
            )),
        }
    }

    async fn unseal(&mut self) -> Result<String> {
        let (shares, source) = self.shares().await?;
        self.site
            .unseal(&shares, &source, |p| eprintln!("    {}", progress_line(&p)))
            .await
            .with_context(|| format!("unsealing Vault with the key from {source}"))?;
        let pod = &self.site.config.vault.pod;
        let note = if self.site.vault_pod_ready(VAULT_READY).await? {
            format!("; {pod} is Ready")
        } else {
            format!("; {pod} is not Ready yet")
        };
        Ok(format!("Vault unsealed with the key from {source}{note}"))
    }

    async fn recreate_secret(&mut self) -> Result<String> {
        let name = self.site.unseal_secret_name();
        let Some(shares) = self.key.backup()? else {
            bail!(crate::next::hinted(
                format!("recreating Secret {name} needs the offline backup"),
                "rerun with --from vault-key.age --key-identity IDENTITY"
            ));
        };
        // A key Vault refuses must not become the Secret: a sealed Vault proves it first.
        let unsealed = self
            .site
            .unseal(&shares, "the offline backup", |p| {
                eprintln!("    {}", progress_line(&p))
            })
            .await
            .context(
                "the offline backup's key does not unseal this Vault; the Secret was not recreated",
            )?;
        if (shares.len() as u32) < unsealed.threshold() {
            bail!(
                "the offline backup holds {} share(s) but Vault needs {}; the Secret was not recreated",
                shares.len(),
                unsealed.threshold()
            );
        }
        self.site.write_unseal_secret(&shares).await?;
        Ok(format!(
            "Secret {name} recreated from the offline backup ({} share(s)){}",
            shares.len(),
            match unsealed {
                Unsealed::Now(_) => "; the key unsealed Vault, so it is the right one",
                Unsealed::Already(_) => "; Vault is unsealed, so the key could not be tried (`rebox key verify --against-cluster` compares the backup with the Secret)",
            }
        ))
    }

    async fn resume(&self, ns: &str, name: &str) -> Result<String> {
        let api: Api<CronJob> = Api::namespaced(self.site.cluster().await?.client.clone(), ns);
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .with_context(|| format!("resuming CronJob {ns}/{name}"))?;
        let cj = api.get(name).await?;
        if cj.spec.and_then(|s| s.suspend).unwrap_or(false) {
            bail!("CronJob {ns}/{name} is still suspended after the patch");
        }
        Ok(format!("CronJob {ns}/{name} resumed"))
    }

    /// What `kubectl create job NAME --from=cronjob/CJ` does, then waits for the result.
    async fn run_cronjob(&self, ns: &str, name: &str) -> Result<String> {
        let client = self.site.cluster().await?.client.clone();
        let cjs: Api<CronJob> = Api::namespaced(client.clone(), ns);
        let cj = cjs
            .get(name)
            .await
            .with_context(|| format!("reading CronJob {ns}/{name}"))?;
        let template = cj
            .spec
            .as_ref()
            .map(|s| s.job_template.clone())
            .context("the CronJob has no spec")?;
        let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut job_name = format!("{name}-rebox-{stamp}");
        job_name.truncate(63);
        let meta = template.metadata.unwrap_or_default();
        let mut annotations = meta.annotations.unwrap_or_default();
        annotations.insert("cronjob.kubernetes.io/instantiate".into(), "manual".into());
        let job: Job = serde_json::from_value(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": job_name,
                "namespace": ns,
                "labels": meta.labels.unwrap_or_default(),
                "annotations": annotations,
                "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "CronJob",
                    "name": name, "uid": cj.metadata.uid.clone().unwrap_or_default(),
                }],
            },
            "spec": template.spec,
        }))?;
        let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
        jobs.create(&PostParams::default(), &job)
            .await
            .with_context(|| format!("creating Job {ns}/{job_name} from CronJob {name}"))?;
        let finished =
            |j: Option<&Job>| j.is_some_and(|j| super::checks::job_result(j) != "Running");
        if !wait_for(jobs.clone(), &job_name, DEADLINE, finished).await? {
            bail!(
                "Job {ns}/{job_name} did not finish within {}s",
                DEADLINE.as_secs()
            );
        }
        let result = super::checks::job_result(&jobs.get(&job_name).await?);
        let log = job_log_tail(&client, ns, &job_name)
            .await
            .unwrap_or_default();
        if result != "Complete" {
            bail!("Job {ns}/{job_name} from CronJob {name} failed; its log:\n{log}");
        }
        Ok(format!(
            "Job {ns}/{job_name} from CronJob {name} completed{}",
            log.lines()
                .last()
                .map(|l| format!(": {l}"))
                .unwrap_or_default()
        ))
    }

    async fn ready_vault_for_eso(&mut self) -> Result<String> {
        let (shares, source) = self.shares().await?;
        let (token, revoked) = self
            .site
            .root_token_from_key(&shares)
            .await
            .with_context(|| {
                format!("making a short-lived root token with the key from {source}")
            })?;
        for line in revoked {
            eprintln!("    {line}");
        }
        let work = async {
            let found = self.site.eso_setup(&token.token).await?;
            let problems = found.problems(&self.site.config.eso);
            if !problems.is_empty() {
                eprintln!("    Vault's setup for ESO: {}", problems.join("; "));
            }
            // The operator confirmed this fix: a pinned or missing config is rewritten
            // in-cluster, a missing or unbound role is written again; a policy that exists
            // is theirs and stays.
            let setup = Setup::Repair {
                config: found.config_wrong(),
                role: found.role != RoleState::BindsEso,
            };
            self.site.ready_vault_for_eso(&token.token, setup).await
        }
        .await;
        let revoked = self.site.revoke_root_token(token).await;
        let done = work?;
        revoked?;
        for line in &done {
            eprintln!("    {line}");
        }
        let restarted = self.restart_eso().await?;
        Ok(format!(
            "Vault set up for ESO again (root token from {source}, revoked); {restarted}"
        ))
    }

    async fn restart_eso(&self) -> Result<String> {
        let e = &self.site.config.eso;
        if self.site.vault().await?.seal_status().await?.sealed {
            bail!("Vault is sealed: restarting ESO would not help until it is unsealed (the unseal fix comes first)");
        }
        rollout_restart(
            &self.site.cluster().await?.client,
            &e.namespace,
            &e.deployments,
        )
        .await?;
        let stores: Api<DynamicObject> =
            Api::all_with(self.site.cluster().await?.client.clone(), &store_resource());
        let ready = |o: Option<&DynamicObject>| store_ready(o);
        if !wait_for(stores.clone(), &e.store, DEADLINE, ready).await? {
            let seen = stores.get_opt(&e.store).await.ok().flatten();
            bail!(
                "ClusterSecretStore {} is not Ready {}s after ESO was restarted: {}",
                e.store,
                DEADLINE.as_secs(),
                store_state(seen.as_ref())
            );
        }
        Ok(format!(
            "restarted {} in {}; ClusterSecretStore {} is Ready",
            e.deployments.join(", "),
            e.namespace,
            e.store
        ))
    }

    async fn refresh(&self, apps: &[String]) -> Result<String> {
        let ns = &self.site.config.argocd.namespace;
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.site.cluster().await?.client.clone(),
            ns,
            &app_resource(),
        );
        let mut done = vec![];
        for name in apps {
            api.get(name)
                .await
                .with_context(|| format!("reading Application {ns}/{name}"))?;
            let patch = json!({"metadata": {"annotations": {REFRESH: "hard"}}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("asking Argo CD for a hard refresh of {ns}/{name}"))?;
            let refreshed = |o: Option<&DynamicObject>| o.is_some_and(hard_refresh_done);
            if !wait_for(api.clone(), name, Duration::from_secs(60), refreshed).await? {
                bail!("Argo CD did not act on the hard refresh of {ns}/{name} within 60s (is the argo-cd-application-controller StatefulSet running?)");
            }
            // Settled: synced, or a finished sync that failed (Argo CD retries on its own;
            // a short grace lets a retry that succeeds be seen).
            let settled = |o: Option<&DynamicObject>| o.is_some_and(|o| app_ok(o) || app_failed(o));
            wait_for(api.clone(), name, Duration::from_secs(60), settled).await?;
            let synced = |o: Option<&DynamicObject>| o.is_some_and(app_ok);
            if !wait_for(api.clone(), name, SYNC_GRACE, synced).await? {
                let seen = api.get(name).await?;
                bail!(crate::next::hinted(format!("Application {ns}/{name} was hard-refreshed but is still not Synced and Healthy: {}", app_problem(&seen)), "the sync error is the reason; fix it in the Git repository, then rerun"));
            }
            done.push(name.clone());
        }
        Ok(format!(
            "hard-refreshed {}: Synced and Healthy",
            done.join(", ")
        ))
    }
}

/// Argo CD removes the refresh annotation in the same status write that ends the refresh
/// (argo-cd controller/appcontroller.go, persistAppStatus), so its absence is the signal.
/// `reconciledAt` has second resolution: a refresh that lands in the same second as the
/// reconcile before it leaves it unchanged, so it cannot be required to move.
fn hard_refresh_done(app: &DynamicObject) -> bool {
    app.metadata
        .annotations
        .as_ref()
        .is_none_or(|a| !a.contains_key(REFRESH))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(annotated: bool, reconciled_at: &str) -> DynamicObject {
        let mut o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "root", "namespace": "argocd"},
            "status": {"reconciledAt": reconciled_at}
        }))
        .unwrap();
        if annotated {
            o.metadata.annotations = Some([(REFRESH.to_string(), "hard".to_string())].into());
        }
        o
    }

    #[test]
    fn a_hard_refresh_in_the_same_second_as_the_last_reconcile_is_seen_as_done() {
        // Before: reconciled at 10:00:00 with no annotation; the refresh ends in that second.
        assert!(!hard_refresh_done(&app(true, "2026-12-04T10:00:00Z")));
        assert!(hard_refresh_done(&app(false, "2026-12-04T10:00:00Z")));
    }
}
