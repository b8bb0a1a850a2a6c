//! What the checks read: the objects of the recovery sequence and Vault's seal status.
//!
//! [`gather`] lists everything once (for `status` and `doctor`); [`super::watch`] keeps the
//! same [`Snapshot`] current from kube watches. A list that fails (e.g. a CRD that is not
//! installed) is kept as its error, which the checks report as evidence.
//!
//! The unseal Secret is reduced to a [`SecretInfo`] as soon as it is read: key names and a
//! share count, never the value. Vault and the cluster are reached through [`Site`].

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{DynamicObject, ListParams, LogParams};
use kube::Api;

use crate::site::readiness::{
    app_resource, external_secret_resource, longhorn_volume_resource, store_resource,
};
use crate::site::EsoLogin;
use crate::site::{SecretInfo, Site, VaultTunnel};
use crate::vault::SealStatus;

/// A list, or why it could not be read.
pub type Listed<T> = Result<Vec<T>, String>;

/// How many lines of a Job's log the evidence shows.
pub const LOG_TAIL_LINES: i64 = 8;

/// Everything the checks look at.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Where the server is, for reports.
    pub target: String,
    /// The k3s API: its version, or why it does not answer.
    pub api: Result<String, String>,
    pub nodes: Listed<Node>,
    /// Claims in Vault's namespace.
    pub pvcs: Listed<PersistentVolumeClaim>,
    pub pvs: Listed<PersistentVolume>,
    /// Longhorn `Volume` objects.
    pub volumes: Listed<DynamicObject>,
    /// Pods in Vault's namespace.
    pub pods: Listed<Pod>,
    /// The unseal Secret: None when it does not exist.
    pub secret: Result<Option<SecretInfo>, String>,
    pub cronjobs: Listed<CronJob>,
    pub jobs: Listed<Job>,
    /// `namespace/job` → the last lines of its pod's log (doctor only).
    pub job_logs: BTreeMap<String, String>,
    pub stores: Listed<DynamicObject>,
    pub external_secrets: Listed<DynamicObject>,
    pub apps: Listed<DynamicObject>,
    /// Vault's seal status through the tunnel, or why it cannot be read.
    pub vault: Result<SealStatus, String>,
    /// ESO's login to Vault, tried by doctor (not status) when Vault is unsealed and the
    /// store is not Ready: None when not tried.
    pub eso_login: Option<Result<EsoLogin, String>>,
}

impl Snapshot {
    /// CronJob `ns/name`, if it was listed.
    pub fn cronjob(&self, ns: &str, name: &str) -> Option<&CronJob> {
        self.cronjobs.as_ref().ok()?.iter().find(|c| {
            c.metadata.namespace.as_deref() == Some(ns) && c.metadata.name.as_deref() == Some(name)
        })
    }

    /// The Jobs a CronJob made (by owner uid), newest first.
    pub fn jobs_of(&self, ns: &str, cronjob: &str) -> Vec<&Job> {
        let Some(uid) = self
            .cronjob(ns, cronjob)
            .and_then(|c| c.metadata.uid.clone())
        else {
            return vec![];
        };
        let mut jobs: Vec<&Job> = self
            .jobs
            .as_ref()
            .map(|j| {
                j.iter()
                    .filter(|j| j.metadata.namespace.as_deref() == Some(ns))
                    .filter(|j| {
                        j.metadata
                            .owner_references
                            .as_ref()
                            .is_some_and(|o| o.iter().any(|o| o.uid == uid))
                    })
                    .collect()
            })
            .unwrap_or_default();
        jobs.sort_by(|a, b| {
            b.metadata
                .creation_timestamp
                .cmp(&a.metadata.creation_timestamp)
        });
        jobs
    }

    /// A snapshot where nothing could be read because `why` (e.g. the API is down).
    pub fn unreachable(target: String, why: &str) -> Snapshot {
        macro_rules! e {
            () => {
                Err(why.to_string())
            };
        }
        Snapshot {
            target,
            api: e!(),
            nodes: e!(),
            pvcs: e!(),
            pvs: e!(),
            volumes: e!(),
            pods: e!(),
            secret: e!(),
            cronjobs: e!(),
            jobs: e!(),
            job_logs: BTreeMap::new(),
            stores: e!(),
            external_secrets: e!(),
            apps: e!(),
            vault: e!(),
            eso_login: None,
        }
    }
}

/// An error as one line (kube's errors carry the API's message).
pub fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().replace('\n', " ")
}

async fn list<K>(api: Api<K>) -> Listed<K>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok(l.items),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            Err("not served by the cluster (is its CRD installed?)".into())
        }
        Err(e) => Err(one_line(&e)),
    }
}

/// Vault's seal status, or why it cannot be read.
pub async fn vault_status(vault: Option<&VaultTunnel>) -> Result<SealStatus, String> {
    match vault {
        None => Err("no tunnel to Vault's Service".into()),
        Some(v) => v.client.seal_status().await.map_err(|e| one_line(&e)),
    }
}

/// Reads everything once; when the k3s API cannot be reached, a snapshot that says why (the
/// cause's first line: the check carries its own fix).
pub async fn of(site: &Site, logs: bool) -> Result<Snapshot> {
    match site.cluster().await {
        Ok(_) => gather(site, logs).await,
        Err(e) => {
            let text = format!("{e:#}");
            let why = text.lines().next().unwrap_or_default();
            Ok(Snapshot::unreachable(site.remote.target.addr(), why))
        }
    }
}

/// Reads everything once. `logs`: also the log tails of the CronJobs' latest Jobs.
async fn gather(site: &Site, logs: bool) -> Result<Snapshot> {
    let (remote, config) = (&site.remote, &site.config);
    let cluster = site.cluster().await?;
    let client = &cluster.client;
    let vns = config.vault.namespace.as_str();
    let api = client
        .apiserver_version()
        .await
        .map(|v| format!("{} at {}", v.git_version, cluster.api_addr))
        .map_err(|e| one_line(&e));
    let (nodes, pvcs, pvs, volumes, pods, secret, cronjobs, jobs, stores, ess, apps) = tokio::join!(
        list(Api::<Node>::all(client.clone())),
        list(Api::<PersistentVolumeClaim>::namespaced(
            client.clone(),
            vns
        )),
        list(Api::<PersistentVolume>::all(client.clone())),
        list(Api::<DynamicObject>::all_with(
            client.clone(),
            &longhorn_volume_resource()
        )),
        list(Api::<Pod>::namespaced(client.clone(), vns)),
        site.unseal_secret_info(),
        list(Api::<CronJob>::all(client.clone())),
        list(Api::<Job>::all(client.clone())),
        list(Api::<DynamicObject>::all_with(
            client.clone(),
            &store_resource()
        )),
        list(Api::<DynamicObject>::all_with(
            client.clone(),
            &external_secret_resource()
        )),
        list(Api::<DynamicObject>::namespaced_with(
            client.clone(),
            &config.argocd.namespace,
            &app_resource()
        )),
    );
    let secret = secret.map_err(|e| one_line(&format!("{e:#}")));
    let vault = site.seal_status().await;
    let mut snap = Snapshot {
        target: remote.target.addr(),
        api,
        nodes,
        pvcs,
        pvs,
        volumes,
        pods,
        secret,
        cronjobs,
        jobs,
        job_logs: BTreeMap::new(),
        stores,
        external_secrets: ess,
        apps,
        vault,
        eso_login: None,
    };
    if logs {
        let unsealed = snap.vault.as_ref().is_ok_and(|v| !v.sealed);
        let store_ready = snap.stores.as_ref().is_ok_and(|l| {
            l.iter().any(|o| {
                o.metadata.name.as_deref() == Some(config.eso.store.as_str())
                    && crate::site::readiness::store_ready(Some(o))
            })
        });
        if unsealed && !store_ready {
            snap.eso_login = Some(
                site.eso_login()
                    .await
                    .map_err(|e| one_line(&format!("{e:#}"))),
            );
        }
        for (ns, cj) in [
            (vns, config.vault.unseal_cronjob.as_str()),
            (
                config.eso.namespace.as_str(),
                config.eso.recovery_cronjob.as_str(),
            ),
        ] {
            if let Some(job) = snap.jobs_of(ns, cj).first() {
                let name = job.metadata.name.clone().unwrap_or_default();
                if let Some(tail) = job_log_tail(client, ns, &name).await {
                    snap.job_logs.insert(format!("{ns}/{name}"), tail);
                }
            }
        }
    }
    Ok(snap)
}

/// The last lines of the log of a Job's (newest) pod, if there is one.
pub async fn job_log_tail(client: &kube::Client, ns: &str, job: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut listed = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .ok()?
        .items;
    listed.sort_by_key(|p| p.metadata.creation_timestamp.clone());
    let pod = listed.last()?.metadata.name.clone()?;
    let params = LogParams {
        tail_lines: Some(LOG_TAIL_LINES),
        ..Default::default()
    };
    match pods.logs(&pod, &params).await {
        Ok(text) => Some(text.trim_end().to_string()),
        Err(e) => Some(format!("(no log from pod {pod}: {})", one_line(&e))),
    }
}
