//! The External Secrets Operator stand-in: ClusterSecretStore readiness against the Vault
//! stand-in, the "stays degraded until ESO restarts" behaviour, and ExternalSecret sync.
//!
//! Contract followed: `../shared/reference/platform-facts.md` §4:
//! - A ClusterSecretStore with `spec.provider.vault.server` gets `status.conditions[type=Ready]`:
//!   True / `Valid` / "store validated" when Vault answers `GET /v1/sys/seal-status` with
//!   `initialized: true, sealed: false`; otherwise False / `ValidationFailed` / "unable to
//!   validate store: ..." (sealed, uninitialised, or unreachable), and
//!   `status.capabilities: ReadWrite`.
//! - Once Ready=False, the store STAYS not-Ready even after Vault is unsealed, until every
//!   ESO Deployment (`external-secrets`, `external-secrets-webhook`,
//!   `external-secrets-cert-controller`, in the namespace that holds `external-secrets`) has
//!   been restarted after the degradation: its pod template's
//!   `kubectl.kubernetes.io/restartedAt` annotation (or, for a Deployment created later, its
//!   creationTimestamp) is not older than the Ready condition's `lastTransitionTime`. (Real
//!   ESO re-validates only every `--store-requeue-interval`, 5 min; the lab makes the wait
//!   indefinite so that the eso-recovery path is exercised, as issue 5 asks.) The latch lives
//!   in the API objects, so it survives a lab-k3s restart.
//! - Nothing happens while Deployment `external-secrets` does not exist (no controller runs).
//! - The Vault address: `server`'s host `<svc>.<ns>[.svc[.cluster.local]]` names a Service;
//!   its node address annotation ([`super::workloads::NODE_ADDRESS_ANNOTATION`], set by the
//!   workloads controller in host tests) wins, else the URL is used as written (a lab server
//!   makes ClusterIPs reachable).
//! - ExternalSecret (`secretStoreRef.kind: ClusterSecretStore`): when the store is Ready, a
//!   Secret named `target.name` (default: the ExternalSecret's name) owned by the
//!   ExternalSecret gets `data` from the lab KV; status Ready True `SecretSynced` "secret
//!   synced", `refreshTime`, `syncedResourceVersion`, `binding.name`. Store not Ready or a key
//!   missing: Ready False `SecretSyncedError` (an existing Secret is kept, as ESO does).
//!
//! Simplification (said so): lab-vault has no KV engine, so secret values come from the lab
//! KV file `<data dir>/lab/vault-kv.json`: `{"<key>": {"<property>": "<value>", ...}}`, where
//! `<key>` is `remoteRef.key` as written (or `<provider path>/<key>`). `remoteRef.property`
//! picks one property; without it the whole map is JSON-encoded, and `dataFrom.extract`
//! copies every property.
//! Left out: SecretStore (namespaced), templates, generators, push secrets, refresh intervals
//! (a pass runs on every change and every tick).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ops::{self, condition, set_condition};
use crate::k3s::defaults::{now, parse_time};
use crate::k3s::store::Store;

const GROUP: &str = "external-secrets.io";
const MANAGER: &str = "external-secrets";
pub const DEPLOYMENTS: [&str; 3] = [
    "external-secrets",
    "external-secrets-webhook",
    "external-secrets-cert-controller",
];
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

#[derive(Clone, Debug)]
pub struct EsoEnv {
    pub data_dir: PathBuf,
    pub tick: Duration,
}

impl EsoEnv {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EsoEnv {
            data_dir: data_dir.into(),
            tick: Duration::from_millis(250),
        }
    }
    pub fn kv_file(&self) -> PathBuf {
        kv_file(&self.data_dir)
    }
}

/// `<data dir>/lab/vault-kv.json`.
pub fn kv_file(data_dir: &Path) -> PathBuf {
    data_dir.join("lab/vault-kv.json")
}

pub fn spawn(store: Arc<Store>, env: &super::LabEnv) -> tokio::task::JoinHandle<()> {
    spawn_with(store, EsoEnv::new(&env.data_dir))
}

pub fn spawn_with(store: Arc<Store>, env: EsoEnv) -> tokio::task::JoinHandle<()> {
    if !ops::claim_once(&store, "eso") {
        return tokio::spawn(async {});
    }
    tokio::spawn(run(store, env))
}

pub async fn run(store: Arc<Store>, env: EsoEnv) {
    let mut rx = store.subscribe();
    loop {
        let interest = |e: &crate::k3s::store::Event| {
            e.group == GROUP
                || (e.group == "apps" && e.plural == "deployments")
                || (e.group.is_empty() && e.plural == "services")
        };
        if !super::next_pass(&mut rx, env.tick, interest).await {
            return;
        }
        pass(&store, &env).await;
    }
}

/// The ESO namespace: where Deployment `external-secrets` lives.
fn eso_namespace(store: &Store) -> Option<String> {
    ops::list(store, "apps", "deployments", None)
        .into_iter()
        .find(|d| d["metadata"]["name"] == DEPLOYMENTS[0])
        .and_then(|d| d["metadata"]["namespace"].as_str().map(String::from))
}

/// Whether every ESO Deployment was (re)started at or after `since`.
fn restarted_since(store: &Store, ns: &str, since: chrono::DateTime<chrono::Utc>) -> bool {
    DEPLOYMENTS.iter().all(|name| {
        let Some(d) = ops::get(store, "apps", "deployments", ns, name) else {
            return false;
        };
        // Timestamps have whole seconds: a restart in the degradation's second counts, but
        // a Deployment created in that same second existed before it (it was not restarted).
        let restarted = d["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
            .as_str()
            .and_then(parse_time)
            .is_some_and(|t| t >= since);
        let created_after = d["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(parse_time)
            .is_some_and(|t| t > since);
        restarted || created_after
    })
}

/// Resolves the provider's server URL to the address to dial (`host:port`).
fn vault_address(store: &Store, server: &str) -> Option<String> {
    let rest = server
        .strip_prefix("http://")
        .or_else(|| server.strip_prefix("https://"))?;
    let hostport = rest.split('/').next()?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.to_string()),
        None => (hostport.to_string(), "8200".to_string()),
    };
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() >= 2
        && parts[0]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        if let Some(svc) = ops::get(store, "", "services", parts[1], parts[0]) {
            if let Some(a) =
                svc["metadata"]["annotations"][super::workloads::NODE_ADDRESS_ANNOTATION].as_str()
            {
                return Some(a.trim_start_matches("http://").to_string());
            }
            if let Some(ip) = svc["spec"]["clusterIP"].as_str().filter(|ip| *ip != "None") {
                return Some(format!("{ip}:{port}"));
            }
        }
    }
    Some(format!("{host}:{port}"))
}

/// `GET /v1/sys/seal-status` over plain HTTP/1.0; Err(text) when unreachable or malformed.
pub async fn seal_status(addr: &str) -> Result<Value, String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("dial tcp {addr}: {e}"))?;
        s.write_all(format!("GET /v1/sys/seal-status HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![];
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf);
        let (_, body) = text.split_once("\r\n\r\n").ok_or("malformed HTTP answer")?;
        serde_json::from_str::<Value>(body).map_err(|e| format!("decoding seal-status: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(3), fut)
        .await
        .map_err(|_| format!("dial tcp {addr}: i/o timeout"))?
}

async fn pass(store: &Store, env: &EsoEnv) {
    let Some(eso_ns) = eso_namespace(store) else {
        return;
    };
    let mut ready_stores = BTreeMap::new();
    for css in ops::list(store, GROUP, "clustersecretstores", None) {
        let name = css["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let server = css["spec"]["provider"]["vault"]["server"]
            .as_str()
            .unwrap_or_default();
        let health = match vault_address(store, server) {
            None => Err(format!("invalid vault server URL {server:?}")),
            Some(addr) => match seal_status(&addr).await {
                Err(e) => Err(e),
                Ok(s) if s["initialized"] != true => Err("vault is not initialized".into()),
                Ok(s) if s["sealed"] != false => Err("Vault is sealed".into()),
                Ok(_) => Ok(()),
            },
        };
        let current = condition(&css, "Ready").cloned();
        let latched = match &current {
            Some(c) if c["status"] == "False" => {
                let since = c["lastTransitionTime"].as_str().and_then(parse_time);
                !since.is_some_and(|t| restarted_since(store, &eso_ns, t))
            }
            _ => false,
        };
        let (status, reason, message) = match (&health, latched) {
            (Ok(()), false) => ("True", "Valid", "store validated".to_string()),
            (Ok(()), true) => (
                "False",
                "ValidationFailed",
                current
                    .as_ref()
                    .and_then(|c| c["message"].as_str())
                    .unwrap_or("unable to validate store")
                    .to_string(),
            ),
            (Err(e), _) => (
                "False",
                "ValidationFailed",
                format!("unable to validate store: {e}"),
            ),
        };
        if status == "True" {
            ready_stores.insert(name.clone(), css.clone());
        }
        let _ = ops::modify(
            store,
            GROUP,
            "clustersecretstores",
            "",
            &name,
            Some("status"),
            MANAGER,
            |o| {
                if !o["status"].is_object() {
                    o["status"] = json!({});
                }
                o["status"]["capabilities"] = json!("ReadWrite");
                set_condition(
                    &mut o["status"]["conditions"],
                    "Ready",
                    status,
                    reason,
                    &message,
                );
                // ESO's conditions carry no lastProbeTime.
                if let Some(arr) = o["status"]["conditions"].as_array_mut() {
                    for c in arr {
                        if let Some(m) = c.as_object_mut() {
                            m.remove("lastProbeTime");
                        }
                    }
                }
                true
            },
        );
    }
    let kv: Value = std::fs::read(env.kv_file())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(json!({}));
    for es in ops::list(store, GROUP, "externalsecrets", None) {
        sync_external_secret(store, &es, &ready_stores, &kv);
    }
}

fn lookup<'a>(kv: &'a Value, store: &Value, key: &str) -> Option<&'a Value> {
    kv.get(key).or_else(|| {
        let path = store["spec"]["provider"]["vault"]["path"].as_str()?;
        kv.get(format!(
            "{}/{}",
            path.trim_end_matches('/'),
            key.trim_start_matches('/')
        ))
    })
}

fn sync_external_secret(store: &Store, es: &Value, ready: &BTreeMap<String, Value>, kv: &Value) {
    let ns = es["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = es["metadata"]["name"].as_str().unwrap_or_default();
    let store_name = es["spec"]["secretStoreRef"]["name"]
        .as_str()
        .unwrap_or_default();
    let kind = es["spec"]["secretStoreRef"]["kind"]
        .as_str()
        .unwrap_or("SecretStore");
    let result: Result<BTreeMap<String, String>, String> = (|| {
        if kind != "ClusterSecretStore" {
            return Err(format!("could not get SecretStore \"{store_name}\": the lab serves ClusterSecretStores only"));
        }
        let css = ready
            .get(store_name)
            .ok_or_else(|| format!("could not get ClusterSecretStore \"{store_name}\", SecretStore \"{store_name}\" is not ready"))?;
        let mut data = BTreeMap::new();
        for (i, d) in es["spec"]["data"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let key = d["remoteRef"]["key"].as_str().unwrap_or_default();
            let secret = lookup(kv, css, key).ok_or_else(|| {
                format!(
                    "error retrieving secret at .data[{i}], key: {key}, err: Secret does not exist"
                )
            })?;
            let value = match d["remoteRef"]["property"].as_str() {
                Some(p) => secret[p]
                    .as_str()
                    .map(String::from)
                    .ok_or_else(|| format!("error retrieving secret at .data[{i}], key: {key}, err: property {p} does not exist in key {key}"))?,
                None => secret.to_string(),
            };
            data.insert(
                d["secretKey"].as_str().unwrap_or_default().to_string(),
                value,
            );
        }
        for (i, d) in es["spec"]["dataFrom"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let key = d["extract"]["key"].as_str().unwrap_or_default();
            let secret = lookup(kv, css, key).ok_or_else(|| {
                format!("error processing spec.dataFrom[{i}].extract, err: Secret does not exist")
            })?;
            for (k, v) in secret.as_object().into_iter().flatten() {
                data.insert(
                    k.clone(),
                    v.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string()),
                );
            }
        }
        Ok(data)
    })();
    let target = es["spec"]["target"]["name"]
        .as_str()
        .unwrap_or(name)
        .to_string();
    let synced = match result {
        Ok(data) => {
            let b64: BTreeMap<String, String> = data
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        base64::engine::general_purpose::STANDARD.encode(v),
                    )
                })
                .collect();
            let owner = json!([{"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                                "name": name, "uid": es["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]);
            let res = match ops::get(store, "", "secrets", ns, &target) {
                None => ops::create(
                    store,
                    "",
                    "secrets",
                    ns,
                    json!({
                        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": target, "namespace": ns, "ownerReferences": owner,
                                     "labels": {"reconcile.external-secrets.io/managed": "true"}},
                        "data": b64,
                    }),
                    MANAGER,
                )
                .map(|_| ()),
                Some(_) => ops::modify(store, "", "secrets", ns, &target, None, MANAGER, |o| {
                    o["data"] = json!(b64);
                    true
                })
                .map(|_| ()),
            };
            res.map_err(|e| format!("could not write Secret {target}: {}", e.message))
        }
        Err(e) => Err(e),
    };
    let _ = ops::modify(
        store,
        GROUP,
        "externalsecrets",
        ns,
        name,
        Some("status"),
        MANAGER,
        |o| {
            if !o["status"].is_object() {
                o["status"] = json!({});
            }
            match &synced {
                Ok(()) => {
                    set_condition(
                        &mut o["status"]["conditions"],
                        "Ready",
                        "True",
                        "SecretSynced",
                        "secret synced",
                    );
                    o["status"]["binding"] = json!({"name": target});
                    o["status"]["syncedResourceVersion"] = json!(format!(
                        "1-{}",
                        o["metadata"]["generation"].as_i64().unwrap_or(1)
                    ));
                    if o["status"]["refreshTime"].is_null() {
                        o["status"]["refreshTime"] = json!(now());
                    }
                }
                Err(e) => {
                    set_condition(
                        &mut o["status"]["conditions"],
                        "Ready",
                        "False",
                        "SecretSyncedError",
                        e,
                    );
                }
            }
            if let Some(arr) = o["status"]["conditions"].as_array_mut() {
                for c in arr {
                    if let Some(m) = c.as_object_mut() {
                        m.remove("lastProbeTime");
                    }
                }
            }
            true
        },
    );
}
