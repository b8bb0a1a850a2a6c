//! What the checks read: the objects of the recovery sequence and Vault's seal status.
//!
//! [`gather`] lists everything once (for `status` and `doctor`); [`super::watch`] keeps the
//! same [`Snapshot`] current from kube watches. A list that fails (e.g. a CRD that is not
//! installed) is kept as its error, which the checks report as evidence.
//!
//! The unseal Secret is reduced to a [`SecretInfo`] as soon as it is read: key names and a
//! share count, never the value.

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, LogParams};
use kube::Api;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::remote::{Remote, Tunnel};
use crate::vault::{SealStatus, VaultClient};

/// A list, or why it could not be read.
pub type Listed<T> = Result<Vec<T>, String>;

/// How many lines of a Job's log the evidence shows.
pub const LOG_TAIL_LINES: i64 = 8;

/// The unseal Secret as the checks see it: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// Names of the keys in `data`.
    pub keys: Vec<String>,
    /// Shares in the configured key field (non-empty lines), or why they do not parse.
    pub shares: Option<Result<usize, String>>,
}

impl SecretInfo {
    /// Reduces a Secret to key names and the share count of `key` (the value is dropped here).
    pub fn from_secret(secret: Secret, key: &str) -> SecretInfo {
        let mut keys = Vec::new();
        let mut shares = None;
        for (k, v) in secret.data.unwrap_or_default() {
            // Every value is wiped when dropped here, not only the key's.
            let bytes = zeroize::Zeroizing::new(v.0);
            if k == key {
                shares = Some(match std::str::from_utf8(&bytes) {
                    Err(_) => Err("is not text".to_string()),
                    Ok(text) => crate::keys::source::parse_shares(text)
                        .map(|s| s.len())
                        .map_err(|e| e.to_string()),
                });
            }
            keys.push(k);
        }
        SecretInfo { keys, shares }
    }
}

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
}

impl Snapshot {
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
        }
    }
}

pub fn longhorn_volume_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("longhorn.io", "v1beta2", "Volume"))
}

pub fn external_secret_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "external-secrets.io",
        "v1",
        "ExternalSecret",
    ))
}

pub(crate) use crate::rebuild::gitops::{app_resource, store_resource};

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

/// A Vault client through a tunnel to the Vault Service's cluster IP (as the node sees it).
pub struct VaultConn {
    pub client: VaultClient,
    _tunnel: Tunnel,
}

impl VaultConn {
    pub async fn open(remote: &Remote, cluster: &Cluster, config: &Config) -> Result<VaultConn> {
        let ip = cluster
            .service_ip(&config.vault.namespace, &config.vault.service)
            .await?;
        let tunnel = remote.tunnel(&ip, config.vault.port).await?;
        let client = VaultClient::builder(format!("http://{}", tunnel.local_addr))
            .connect_timeout(std::time::Duration::from_secs(3))
            .timeout(std::time::Duration::from_secs(5))
            .build()?;
        Ok(VaultConn {
            client,
            _tunnel: tunnel,
        })
    }
}

/// Vault's seal status, or why it cannot be read.
pub async fn vault_status(vault: Option<&VaultConn>) -> Result<SealStatus, String> {
    match vault {
        None => Err("no tunnel to Vault's Service".into()),
        Some(v) => v.client.seal_status().await.map_err(|e| one_line(&e)),
    }
}

/// Reads everything once. `logs`: also the log tails of the CronJobs' latest Jobs.
pub async fn gather(
    remote: &Remote,
    cluster: &Cluster,
    config: &Config,
    logs: bool,
) -> Result<Snapshot> {
    let client = &cluster.client;
    let vns = config.vault.namespace.as_str();
    let api = client
        .apiserver_version()
        .await
        .map(|v| format!("{} at {}", v.git_version, cluster.api_addr))
        .map_err(|e| one_line(&e));
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), vns);
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
        secret_api.get_opt(&config.vault.unseal_secret),
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
    let secret = secret
        .map(|s| s.map(|s| SecretInfo::from_secret(s, &config.vault.unseal_secret_key)))
        .map_err(|e| one_line(&e));
    let vault = match VaultConn::open(remote, cluster, config).await {
        Ok(v) => vault_status(Some(&v)).await,
        Err(e) => Err(format!("{e:#}")),
    };
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
    };
    if logs {
        for (ns, cj) in [
            (vns, config.vault.unseal_cronjob.as_str()),
            (
                config.eso.namespace.as_str(),
                config.eso.recovery_cronjob.as_str(),
            ),
        ] {
            if let Some(job) = super::checks::jobs_of(&snap, ns, cj).first() {
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
