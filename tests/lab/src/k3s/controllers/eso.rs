//! The External Secrets Operator stand-in: ClusterSecretStore validation by a real
//! Kubernetes-auth login to Vault (the real OpenBao server), the "stays degraded until ESO
//! restarts" behaviour, and ExternalSecret sync from Vault's real KV data.
//!
//! Contract followed: ESO v2.9.0's sources (platform-facts §4), read for this:
//! - `pkg/controllers/secretstore/common.go` (`validateStore`): a store is validated by making
//!   a provider client, then calling its `Validate()`. Making the client fails → Ready False,
//!   reason `InvalidProviderConfig`, message `unable to create client` (the error goes to a
//!   Warning Event, not into the condition); `Validate()` fails → `InvalidProviderConfig`,
//!   `unable to validate store: <error>`; success → True `Valid` `store validated`,
//!   `status.capabilities: ReadWrite`. A failed store is retried with controller-runtime's
//!   per-item exponential backoff (here 1 s doubling to 60 s, the lab's scale of its 5 ms …
//!   1000 s); a validated one again after `--store-requeue-interval` (5 min, the default; the
//!   flag is not read) or on a spec change (generation).
//! - `providers/v1/vault/provider.go`, `auth.go`, `auth_kubernetes.go`: the Vault client logs
//!   in when it is made. `auth.kubernetes` with `serviceAccountRef {name, namespace,
//!   audiences}` → a token of that ServiceAccount (TokenRequest, 600 s); without it → the
//!   controller pod's own token (the ServiceAccount of Deployment `external-secrets`'s pods).
//!   Then `PUT /v1/auth/<mountPath>/login {role, jwt}` (mountPath default `kubernetes`).
//! - `providers/v1/vault/validate.go` (`Validate`, `validateKVMount`): with a login token,
//!   `GET /v1/sys/internal/ui/mounts/<path>`: a mount that is not `kv`, or not the configured
//!   version, fails validation ("vault mount path %q is not a kv secret engine, got %q", "…
//!   uses kv version %s but store is configured for kv version %s"); an error reading it does
//!   not. The lab revokes its login tokens after use, so none pile up in Vault.
//! - Lab shortcut kept from issue 5: while `GET /v1/sys/seal-status` says sealed or
//!   uninitialised (or Vault does not answer) the store is False / `ValidationFailed` /
//!   "unable to validate store: ..." at once, without a login; and once Ready=False, the store
//!   STAYS not-Ready even after Vault is unsealed, until every ESO Deployment
//!   (`external-secrets`, `external-secrets-webhook`, `external-secrets-cert-controller`, in
//!   the namespace that holds `external-secrets`) has been restarted after the degradation:
//!   its pod template's `kubectl.kubernetes.io/restartedAt` annotation (or, for a Deployment
//!   created later, its creationTimestamp) is not older than the Ready condition's
//!   `lastTransitionTime`. Real ESO retries with backoff (see above); the lab makes the wait
//!   indefinite so that the eso-recovery path is exercised, as issue 5 asks. The latch lives in
//!   the API objects, so it survives a lab-k3s restart.
//! - Nothing happens while Deployment `external-secrets` does not exist (no controller runs).
//! - The Vault address: `server`'s host `<svc>.<ns>[.svc[.cluster.local]]` names a Service;
//!   its node address annotation ([`super::workloads::NODE_ADDRESS_ANNOTATION`], set by the
//!   workloads controller in host tests) wins, else its ClusterIP, else the URL as written.
//! - ExternalSecret (`secretStoreRef.kind: ClusterSecretStore`): when the store is Ready, the
//!   controller logs in as the store says and reads each `remoteRef.key` from the KV mount
//!   `path` (`version` v2: `GET /v1/<path>/data/<key>`, the values in `data.data`; v1:
//!   `GET /v1/<path>/<key>`); `remoteRef.property` picks one value, without it the whole map
//!   is JSON-encoded; `dataFrom.extract` copies every value. A Secret named `target.name`
//!   (default: the ExternalSecret's name) owned by the ExternalSecret gets the data; status
//!   Ready True `SecretSynced` "secret synced", `refreshTime`, `syncedResourceVersion`,
//!   `binding.name`. Store not Ready, login refused or a key missing: Ready False
//!   `SecretSyncedError` (an existing Secret is kept, as ESO does), retried with backoff. A
//!   synced ExternalSecret is read again after an hour (`refreshInterval`'s default; the
//!   field is not read) or on a spec change.
//!
//! Left out: SecretStore (namespaced), referent ClusterSecretStores (a `serviceAccountRef`
//! without a namespace), `auth.kubernetes.secretRef`, auth methods other than Kubernetes,
//! Events, templates, generators, push secrets, Vault namespaces, TLS to Vault.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ops::{self, condition, set_condition};
use crate::bao;
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
}

/// ESO's default `--store-requeue-interval`.
const STORE_REQUEUE: Duration = Duration::from_secs(300);
/// ExternalSecret `refreshInterval`'s default.
const SECRET_REFRESH: Duration = Duration::from_secs(3600);
/// Lifetime of the token asked for a `serviceAccountRef` (auth.go `createServiceAccountToken`).
const SA_REF_TOKEN_SECONDS: i64 = 600;

pub fn spawn(store: Arc<Store>, env: &super::LabEnv) -> tokio::task::JoinHandle<()> {
    spawn_with(store, EsoEnv::new(&env.data_dir))
}

pub fn spawn_with(store: Arc<Store>, env: EsoEnv) -> tokio::task::JoinHandle<()> {
    if !ops::claim_once(&store, "eso") {
        return tokio::spawn(async {});
    }
    tokio::spawn(run(store, env))
}

/// The last attempt at one object (a store's validation, an ExternalSecret's sync): what
/// the controller remembers, lost with a lab-k3s restart as ESO's with its pod.
struct Attempt {
    uid: String,
    generation: i64,
    ok: bool,
    at: Instant,
    at_wall: chrono::DateTime<chrono::Utc>,
    failures: u32,
}

impl Attempt {
    /// Whether `obj` is due: never tried, changed since, a failure whose backoff is over (or
    /// ESO restarted since), or a success older than `every`.
    fn due(
        this: Option<&Attempt>,
        obj: &Value,
        every: Duration,
        restarted: impl Fn(chrono::DateTime<chrono::Utc>) -> bool,
    ) -> bool {
        let Some(a) = this else { return true };
        if a.uid != obj["metadata"]["uid"].as_str().unwrap_or_default()
            || a.generation != obj["metadata"]["generation"].as_i64().unwrap_or(0)
        {
            return true;
        }
        if a.ok {
            return a.at.elapsed() >= every;
        }
        restarted(a.at_wall) || a.at.elapsed() >= backoff(a.failures)
    }

    fn record(slot: &mut HashMap<String, Attempt>, key: &str, obj: &Value, ok: bool) {
        let failures = match slot.get(key) {
            Some(a) if !ok => a.failures + 1,
            _ if !ok => 1,
            _ => 0,
        };
        slot.insert(
            key.to_string(),
            Attempt {
                uid: obj["metadata"]["uid"].as_str().unwrap_or_default().into(),
                generation: obj["metadata"]["generation"].as_i64().unwrap_or(0),
                ok,
                at: Instant::now(),
                at_wall: chrono::Utc::now(),
                failures,
            },
        );
    }
}

/// controller-runtime's per-item exponential backoff, at the lab's scale: 1 s, 2 s, … 60 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// The controller's memory: its process's, so a restart of Deployment `external-secrets`
/// (a new pod) starts it empty and every store is validated again, as ESO does at startup.
#[derive(Default)]
struct Memory {
    /// Which controller pod this memory is of (the Deployment's uid and restart annotation).
    controller: String,
    stores: HashMap<String, Attempt>,
    secrets: HashMap<String, Attempt>,
}

pub async fn run(store: Arc<Store>, env: EsoEnv) {
    let mut rx = store.subscribe();
    let mut mem = Memory::default();
    loop {
        let interest = |e: &crate::k3s::store::Event| {
            e.group == GROUP
                || (e.group == "apps" && e.plural == "deployments")
                || (e.group.is_empty() && e.plural == "services")
        };
        if !super::next_pass(&mut rx, env.tick, interest).await {
            return;
        }
        pass(&store, &mut mem).await;
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

/// How the store's Vault provider logs in: the server to dial, the auth mount and role, and
/// whose token it presents.
struct VaultLogin {
    addr: SocketAddr,
    mount: String,
    role: String,
    kv_path: String,
    kv_version: String,
    jwt: Result<String, String>,
}

/// The login a store's spec asks for (`auth.kubernetes`), with the token ESO would present.
fn vault_login(store: &Store, css: &Value, eso_ns: &str) -> Result<VaultLogin, String> {
    let vault = &css["spec"]["provider"]["vault"];
    let server = vault["server"].as_str().unwrap_or_default();
    let addr = vault_address(store, server)
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .ok_or_else(|| format!("invalid vault server URL {server:?}"))?;
    let k8s = &vault["auth"]["kubernetes"];
    if !k8s.is_object() {
        return Err("the lab's ESO logs in with auth.kubernetes only".into());
    }
    let jwt = match k8s["serviceAccountRef"].as_object() {
        Some(r) => {
            let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
            let ns = r
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let auds: Vec<String> = r
                .get("audiences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            if ns.is_empty() {
                return Err("referent ClusterSecretStores are not modelled by the lab".into());
            }
            crate::k3s::satoken::issue(store, ns, name, &auds, Some(SA_REF_TOKEN_SECONDS), None)
                .map(|i| i.token)
                .map_err(|r| r.message)
        }
        // The controller's own projected token: its pod's ServiceAccount.
        None => {
            let sa = ops::get(store, "apps", "deployments", eso_ns, DEPLOYMENTS[0])
                .and_then(|d| {
                    d["spec"]["template"]["spec"]["serviceAccountName"]
                        .as_str()
                        .map(String::from)
                })
                .unwrap_or_else(|| "default".into());
            crate::k3s::satoken::issue(
                store,
                eso_ns,
                &sa,
                &[],
                Some(crate::k3s::satoken::KUBELET_EXPIRATION),
                None,
            )
            .map(|i| i.token)
            .map_err(|r| r.message)
        }
    };
    Ok(VaultLogin {
        addr,
        mount: k8s["mountPath"]
            .as_str()
            .unwrap_or("kubernetes")
            .trim_matches('/')
            .into(),
        role: k8s["role"].as_str().unwrap_or_default().into(),
        kv_path: vault["path"]
            .as_str()
            .unwrap_or_default()
            .trim_matches('/')
            .into(),
        kv_version: vault["version"].as_str().unwrap_or("v2").into(),
        jwt,
    })
}

/// Vault's error texts from an answer.
fn vault_errors(code: u16, body: &Value) -> String {
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!("Code: {code}. Errors:\n\n* {}", errors.join("\n* "))
}

impl VaultLogin {
    /// `PUT /v1/auth/<mount>/login`: the client token, or what Vault (or the token source) said.
    async fn login(&self) -> Result<String, String> {
        let jwt = self.jwt.clone()?;
        let path = format!("/v1/auth/{}/login", self.mount);
        let (code, body) = bao::call(
            self.addr,
            "PUT",
            &path,
            Some(&json!({"role": self.role, "jwt": jwt})),
            None,
        )
        .await
        .map_err(|e| format!("{e:#}"))?;
        match body["auth"]["client_token"].as_str() {
            Some(t) if code == 200 => Ok(t.to_string()),
            _ => Err(format!(
                "URL: PUT http://{}{path}\n{}",
                self.addr,
                vault_errors(code, &body)
            )),
        }
    }

    /// `validateKVMount`: the mount the store reads must be KV of the configured version.
    async fn validate_kv_mount(&self, token: &str) -> Result<(), String> {
        if self.kv_path.is_empty() {
            return Ok(());
        }
        let path = format!("/v1/sys/internal/ui/mounts/{}", self.kv_path);
        let Ok((code, body)) = bao::call(self.addr, "GET", &path, None, Some(token)).await else {
            return Ok(());
        };
        match code {
            200 => {}
            404 => return Err(format!("vault mount path {:?} was not found", self.kv_path)),
            _ => return Ok(()),
        }
        let kind = body["data"]["type"].as_str().unwrap_or("<missing>");
        if kind != "kv" {
            return Err(format!(
                "vault mount path {:?} is not a kv secret engine, got {kind:?}",
                self.kv_path
            ));
        }
        let got_v2 = body["data"]["options"]["version"].as_str() == Some("2");
        let want_v2 = self.kv_version != "v1";
        if got_v2 != want_v2 {
            let name = |v2: bool| if v2 { "v2" } else { "v1" };
            return Err(format!(
                "vault mount path {:?} uses kv version {} but store is configured for kv version {}",
                self.kv_path,
                name(got_v2),
                name(want_v2)
            ));
        }
        Ok(())
    }

    /// One secret's values under the KV mount; Ok(None) when it does not exist.
    async fn read(&self, token: &str, key: &str) -> Result<Option<Value>, String> {
        let key = key.trim_matches('/');
        let path = if self.kv_version == "v1" {
            format!("/v1/{}/{key}", self.kv_path)
        } else {
            format!("/v1/{}/data/{key}", self.kv_path)
        };
        let (code, body) = bao::call(self.addr, "GET", &path, None, Some(token))
            .await
            .map_err(|e| format!("{e:#}"))?;
        match code {
            200 if self.kv_version == "v1" => Ok(Some(body["data"].clone())),
            200 => Ok(Some(body["data"]["data"].clone())),
            404 => Ok(None),
            _ => Err(vault_errors(code, &body)),
        }
    }

    /// [`Self::read`] where a missing secret is an error too, both in ESO's words after
    /// `what` (`<what>, err: Secret does not exist`).
    async fn read_existing(&self, token: &str, key: &str, what: &str) -> Result<Value, String> {
        match self.read(token, key).await {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(format!("{what}, err: Secret does not exist")),
            Err(e) => Err(format!("{what}, err: {e}")),
        }
    }

    async fn revoke(&self, token: &str) {
        let _ = bao::call(
            self.addr,
            "POST",
            "/v1/auth/token/revoke-self",
            None,
            Some(token),
        )
        .await;
    }
}

/// What one validation found: Ready, or the condition's reason and message.
async fn validate(login: &VaultLogin) -> Result<(), (&'static str, String)> {
    let token = match login.login().await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("lab ESO: unable to create client: {e}");
            return Err(("InvalidProviderConfig", "unable to create client".into()));
        }
    };
    let checked = login.validate_kv_mount(&token).await;
    login.revoke(&token).await;
    checked.map_err(|e| {
        (
            "InvalidProviderConfig",
            format!("unable to validate store: {e}"),
        )
    })
}

async fn pass(store: &Store, mem: &mut Memory) {
    let Some(eso_ns) = eso_namespace(store) else {
        return;
    };
    let controller = ops::get(store, "apps", "deployments", &eso_ns, DEPLOYMENTS[0])
        .map(|d| {
            format!(
                "{}/{}",
                d["metadata"]["uid"].as_str().unwrap_or_default(),
                d["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
                    .as_str()
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default();
    if mem.controller != controller {
        *mem = Memory {
            controller,
            ..Memory::default()
        };
    }
    let restarted = |t: chrono::DateTime<chrono::Utc>| restarted_since(store, &eso_ns, t);
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
                !since.is_some_and(&restarted)
            }
            _ => false,
        };
        let (status, reason, message): (&str, String, String) = match (&health, latched) {
            (Err(e), _) => (
                "False",
                "ValidationFailed".into(),
                format!("unable to validate store: {e}"),
            ),
            (Ok(()), true) => (
                "False",
                current
                    .as_ref()
                    .and_then(|c| c["reason"].as_str())
                    .unwrap_or("ValidationFailed")
                    .to_string(),
                current
                    .as_ref()
                    .and_then(|c| c["message"].as_str())
                    .unwrap_or("unable to validate store")
                    .to_string(),
            ),
            (Ok(()), false)
                if !Attempt::due(mem.stores.get(&name), &css, STORE_REQUEUE, restarted) =>
            {
                // Not due: what the last validation said stands.
                match (mem.stores.get(&name).is_some_and(|a| a.ok), &current) {
                    (true, _) => ("True", "Valid".into(), "store validated".into()),
                    (false, Some(c)) => (
                        if c["status"] == "True" {
                            "True"
                        } else {
                            "False"
                        },
                        c["reason"].as_str().unwrap_or_default().to_string(),
                        c["message"].as_str().unwrap_or_default().to_string(),
                    ),
                    (false, None) => continue,
                }
            }
            (Ok(()), false) => {
                let result = match vault_login(store, &css, &eso_ns) {
                    Err(e) => {
                        eprintln!("lab ESO: unable to create client: {e}");
                        Err((
                            "InvalidProviderConfig",
                            "unable to create client".to_string(),
                        ))
                    }
                    Ok(login) => validate(&login).await,
                };
                Attempt::record(&mut mem.stores, &name, &css, result.is_ok());
                match result {
                    Ok(()) => ("True", "Valid".into(), "store validated".into()),
                    Err((r, m)) => ("False", r.into(), m),
                }
            }
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
                    &reason,
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
    let mut tokens: HashMap<String, Result<(VaultLogin, String), String>> = HashMap::new();
    for es in ops::list(store, GROUP, "externalsecrets", None) {
        let key = format!(
            "{}/{}",
            es["metadata"]["namespace"].as_str().unwrap_or_default(),
            es["metadata"]["name"].as_str().unwrap_or_default()
        );
        let store_name = es["spec"]["secretStoreRef"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Some(css) = ready_stores.get(&store_name) else {
            // Not Ready: nothing is read, the ExternalSecret says so.
            sync_external_secret(store, &es, Err(format!("could not get ClusterSecretStore \"{store_name}\", SecretStore \"{store_name}\" is not ready")));
            Attempt::record(&mut mem.secrets, &key, &es, false);
            continue;
        };
        if !Attempt::due(mem.secrets.get(&key), &es, SECRET_REFRESH, restarted) {
            continue;
        }
        if !tokens.contains_key(&store_name) {
            let got = match vault_login(store, css, &eso_ns) {
                Err(e) => Err(e),
                Ok(login) => match login.login().await {
                    Ok(t) => Ok((login, t)),
                    Err(e) => Err(e),
                },
            };
            tokens.insert(store_name.clone(), got);
        }
        let values = match &tokens[&store_name] {
            Err(e) => Err(format!("unable to log in to Vault: {e}")),
            Ok((login, token)) => read_values(&es, login, token).await,
        };
        Attempt::record(&mut mem.secrets, &key, &es, values.is_ok());
        sync_external_secret(store, &es, values);
    }
    for (login, token) in tokens.into_values().flatten() {
        login.revoke(&token).await;
    }
}

/// What an ExternalSecret's `data` and `dataFrom` read from Vault, by Secret key.
async fn read_values(
    es: &Value,
    login: &VaultLogin,
    token: &str,
) -> Result<BTreeMap<String, String>, String> {
    if es["spec"]["secretStoreRef"]["kind"]
        .as_str()
        .unwrap_or("SecretStore")
        != "ClusterSecretStore"
    {
        let name = es["spec"]["secretStoreRef"]["name"]
            .as_str()
            .unwrap_or_default();
        return Err(format!(
            "could not get SecretStore \"{name}\": the lab serves ClusterSecretStores only"
        ));
    }
    let mut data = BTreeMap::new();
    for (i, d) in es["spec"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let key = d["remoteRef"]["key"].as_str().unwrap_or_default();
        let secret = login
            .read_existing(
                token,
                key,
                &format!("error retrieving secret at .data[{i}], key: {key}"),
            )
            .await?;
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
        let secret = login
            .read_existing(
                token,
                key,
                &format!("error processing spec.dataFrom[{i}].extract"),
            )
            .await?;
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
}

/// Writes the Secret from `values` (kept as it is on an error) and the ExternalSecret's status.
fn sync_external_secret(
    store: &Store,
    es: &Value,
    result: Result<BTreeMap<String, String>, String>,
) {
    let ns = es["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = es["metadata"]["name"].as_str().unwrap_or_default();
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
