//! `rebox status --watch`: the recovery sequence followed live until every step is healthy
//! (or Ctrl-C, or `--timeout`), each change printed with the time since the start.
//!
//! The objects come from kube watches (one per kind, kept as maps like a reflector's store).
//! Two things have no watch and are polled every [`POLL`]: Vault's seal status (an HTTP API
//! with no change stream) and whether the k3s API answers at all (a watch cannot report its
//! own server being down). Before the API answers, the SSH connection and the cluster client
//! are retried every second: after a power loss the operator starts this before k3s is back.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::api::DynamicObject;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde_json::json;
use tokio::sync::Notify;

use super::snapshot::{one_line, vault_status, Listed, Snapshot};
use super::{status_checks, Check, Verdict};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::remote::{HostKeyPolicy, Remote, Target};
use crate::site::readiness::{
    app_resource, external_secret_resource, longhorn_volume_resource, store_resource,
};
use crate::site::{SecretInfo, VaultTunnel};
use crate::vault::SealStatus;

/// How often Vault's seal status and the API's liveness are polled (neither has a watch).
const POLL: Duration = Duration::from_millis(500);
/// How long to wait between connection attempts while the server or k3s is down.
const RETRY: Duration = Duration::from_secs(1);
/// How long the first lists may take before the first report is printed anyway.
const FIRST_SYNC: Duration = Duration::from_secs(10);

/// How a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Healthy,
    Interrupted,
    TimedOut,
}

// ------------------------------------------------------------------ watched kinds

/// One kind's objects, as a watch keeps them.
struct KindState<T> {
    items: BTreeMap<String, T>,
    /// Objects of a (re)list in progress (`Init` … `InitDone`).
    buffer: Option<BTreeMap<String, T>>,
    synced: bool,
    error: Option<String>,
}

impl<T: Clone> KindState<T> {
    fn new() -> Self {
        KindState {
            items: BTreeMap::new(),
            buffer: None,
            synced: false,
            error: None,
        }
    }
    fn listed(&self) -> Listed<T> {
        if self.synced {
            Ok(self.items.values().cloned().collect())
        } else {
            Err(self
                .error
                .clone()
                .unwrap_or_else(|| "waiting for the first list".into()))
        }
    }
    fn settled(&self) -> bool {
        self.synced || self.error.is_some()
    }
}

type Slot<T> = Arc<Mutex<KindState<T>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The next item of a stream (the `Stream` trait reached through kube's extension trait).
async fn next_item<S: WatchStreamExt + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

/// Follows `api` into `slot`, mapping each object with `map`; wakes `notify` on every event.
fn spawn_watch<K, T>(
    api: Api<K>,
    config: watcher::Config,
    map: impl Fn(K) -> T + Send + 'static,
    slot: Slot<T>,
    notify: Arc<Notify>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    T: Clone + Send + 'static,
{
    tokio::spawn(async move {
        let key = |k: &K| {
            format!(
                "{}/{}",
                k.meta().namespace.clone().unwrap_or_default(),
                k.meta().name.clone().unwrap_or_default()
            )
        };
        let mut stream = Box::pin(watcher(api, config).default_backoff());
        while let Some(ev) = next_item(&mut stream).await {
            {
                let mut st = lock(&slot);
                match ev {
                    Ok(Event::Init) => st.buffer = Some(BTreeMap::new()),
                    Ok(Event::InitApply(k)) => {
                        let id = key(&k);
                        st.buffer
                            .get_or_insert_with(BTreeMap::new)
                            .insert(id, map(k));
                    }
                    Ok(Event::InitDone) => {
                        st.items = st.buffer.take().unwrap_or_default();
                        st.synced = true;
                        st.error = None;
                    }
                    Ok(Event::Apply(k)) => {
                        let id = key(&k);
                        st.items.insert(id, map(k));
                        st.error = None;
                    }
                    Ok(Event::Delete(k)) => {
                        st.items.remove(&key(&k));
                    }
                    Err(e) => {
                        let text = match &e {
                            watcher::Error::InitialListFailed(kube::Error::Api(s))
                            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                                if s.code == 404 =>
                            {
                                "not served by the cluster (is its CRD installed?)".to_string()
                            }
                            other => one_line(other),
                        };
                        tracing::debug!("watch: {text}");
                        st.error = Some(text);
                    }
                }
            }
            notify.notify_one();
        }
    })
}

/// The polled state: the API's version (or why not) and Vault's seal status (or why not).
type Polled = (Result<String, String>, Result<SealStatus, String>);

/// Every watch of the recovery sequence, and the polled state.
struct Watches {
    nodes: Slot<Node>,
    pvcs: Slot<PersistentVolumeClaim>,
    pvs: Slot<PersistentVolume>,
    volumes: Slot<DynamicObject>,
    pods: Slot<Pod>,
    secrets: Slot<SecretInfo>,
    cronjobs: Slot<CronJob>,
    jobs: Slot<Job>,
    stores: Slot<DynamicObject>,
    external_secrets: Slot<DynamicObject>,
    apps: Slot<DynamicObject>,
    polled: Arc<Mutex<Polled>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn same<K>(k: K) -> K {
    k
}

fn slot<T: Clone>() -> Slot<T> {
    Arc::new(Mutex::new(KindState::new()))
}

impl Watches {
    fn start(
        remote: &Remote,
        cluster: Arc<Cluster>,
        config: &Config,
        notify: &Arc<Notify>,
    ) -> Watches {
        let c = cluster.client.clone();
        let vns = config.vault.namespace.clone();
        let cfg = watcher::Config::default;
        let mut w = Watches {
            nodes: slot(),
            pvcs: slot(),
            pvs: slot(),
            volumes: slot(),
            pods: slot(),
            secrets: slot(),
            cronjobs: slot(),
            jobs: slot(),
            stores: slot(),
            external_secrets: slot(),
            apps: slot(),
            polled: Arc::new(Mutex::new((
                Err("not polled yet".into()),
                Err("not polled yet".into()),
            ))),
            tasks: vec![],
        };
        let n = || notify.clone();
        w.tasks.push(spawn_watch(
            Api::<Node>::all(c.clone()),
            cfg(),
            same,
            w.nodes.clone(),
            n(),
        ));
        w.tasks.push(spawn_watch(
            Api::<PersistentVolumeClaim>::namespaced(c.clone(), &vns),
            cfg(),
            same,
            w.pvcs.clone(),
            n(),
        ));
        w.tasks.push(spawn_watch(
            Api::<PersistentVolume>::all(c.clone()),
            cfg(),
            same,
            w.pvs.clone(),
            n(),
        ));
        w.tasks.push(spawn_watch(
            Api::<DynamicObject>::all_with(c.clone(), &longhorn_volume_resource()),
            cfg(),
            same,
            w.volumes.clone(),
            n(),
        ));
        w.tasks.push(spawn_watch(
            Api::<Pod>::namespaced(c.clone(), &vns),
            cfg(),
            same,
            w.pods.clone(),
            n(),
        ));
        // The Secret is reduced to key names and a share count as it arrives.
        let key = config.vault.unseal_secret_key.clone();
        w.tasks.push(spawn_watch(
            Api::<Secret>::namespaced(c.clone(), &vns),
            cfg().fields(&format!("metadata.name={}", config.vault.unseal_secret)),
            move |s| SecretInfo::from_secret(s, &key),
            w.secrets.clone(),
            n(),
        ));
        w.tasks.push(spawn_watch(
            Api::<CronJob>::all(c.clone()),
            cfg(),
            same,
            w.cronjobs.clone(),
            n(),
        ));
        w.tasks.push(spawn_watch(
            Api::<Job>::all(c.clone()),
            cfg(),
            same,
            w.jobs.clone(),
            n(),
        ));
        w.tasks.push(spawn_watch(
            Api::<DynamicObject>::all_with(c.clone(), &store_resource()),
            cfg(),
            same,
            w.stores.clone(),
            n(),
        ));
        w.tasks.push(spawn_watch(
            Api::<DynamicObject>::all_with(c.clone(), &external_secret_resource()),
            cfg(),
            same,
            w.external_secrets.clone(),
            n(),
        ));
        w.tasks.push(spawn_watch(
            Api::<DynamicObject>::namespaced_with(
                c.clone(),
                &config.argocd.namespace,
                &app_resource(),
            ),
            cfg(),
            same,
            w.apps.clone(),
            n(),
        ));
        // Polled: the API's liveness and Vault's seal status (no watch exists for either).
        let polled = w.polled.clone();
        let (remote, config, notify) = (remote.clone(), config.clone(), notify.clone());
        w.tasks.push(tokio::spawn(async move {
            let mut vault: Option<VaultTunnel> = None;
            loop {
                let api = match tokio::time::timeout(
                    Duration::from_secs(3),
                    cluster.client.apiserver_version(),
                )
                .await
                {
                    Ok(Ok(v)) => Ok(format!("{} at {}", v.git_version, cluster.api_addr)),
                    Ok(Err(e)) => Err(one_line(&e)),
                    Err(_) => Err("no answer within 3s".into()),
                };
                if vault.is_none() {
                    vault = VaultTunnel::open(&remote, &cluster, &config.vault)
                        .await
                        .ok();
                }
                let sealed = match &vault {
                    Some(_) => vault_status(vault.as_ref()).await,
                    None => Err("Vault's Service is not reachable yet".into()),
                };
                if sealed.is_err() {
                    vault = None;
                }
                let changed = {
                    let mut p = lock(&polled);
                    let new = (api, sealed);
                    let changed = p.0 != new.0 || p.1 != new.1;
                    *p = new;
                    changed
                };
                if changed {
                    notify.notify_one();
                }
                tokio::time::sleep(POLL).await;
            }
        }));
        w
    }

    fn settled(&self) -> bool {
        lock(&self.nodes).settled()
            && lock(&self.pvcs).settled()
            && lock(&self.pvs).settled()
            && lock(&self.volumes).settled()
            && lock(&self.pods).settled()
            && lock(&self.secrets).settled()
            && lock(&self.cronjobs).settled()
            && lock(&self.jobs).settled()
            && lock(&self.stores).settled()
            && lock(&self.external_secrets).settled()
            && lock(&self.apps).settled()
            && lock(&self.polled).1 != Err("not polled yet".into())
    }

    fn snapshot(&self, target: &str) -> Snapshot {
        let (api, vault) = lock(&self.polled).clone();
        let secret = lock(&self.secrets).listed().map(|v| v.into_iter().next());
        Snapshot {
            target: target.to_string(),
            api,
            nodes: lock(&self.nodes).listed(),
            pvcs: lock(&self.pvcs).listed(),
            pvs: lock(&self.pvs).listed(),
            volumes: lock(&self.volumes).listed(),
            pods: lock(&self.pods).listed(),
            secret,
            cronjobs: lock(&self.cronjobs).listed(),
            jobs: lock(&self.jobs).listed(),
            job_logs: BTreeMap::new(),
            stores: lock(&self.stores).listed(),
            external_secrets: lock(&self.external_secrets).listed(),
            apps: lock(&self.apps).listed(),
            vault,
            eso_login: None,
        }
    }
}

// ------------------------------------------------------------------ output

/// Prints each step's changes with the time since the start; remembers when each became healthy.
struct Printer<'w, W: Write> {
    out: &'w mut W,
    json: bool,
    start: Instant,
    last: HashMap<&'static str, (Verdict, String)>,
    /// When each step last became healthy, and its title, in sequence order.
    healthy_at: Vec<(&'static str, &'static str, Option<f64>)>,
}

impl<W: Write> Printer<'_, W> {
    fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn update(&mut self, checks: &[Check]) -> Result<()> {
        let t = self.secs();
        for c in checks {
            let now = (c.verdict, c.summary.clone());
            if self.last.get(c.id) == Some(&now) {
                continue;
            }
            self.last.insert(c.id, now);
            match self.healthy_at.iter_mut().find(|(id, _, _)| *id == c.id) {
                Some(entry) => {
                    if !c.verdict.healthy() {
                        entry.2 = None;
                    } else if entry.2.is_none() {
                        entry.2 = Some(t);
                    }
                }
                None => self
                    .healthy_at
                    .push((c.id, c.title, c.verdict.healthy().then_some(t))),
            }
            if self.json {
                let line = json!({"event": "step", "t_secs": round(t), "id": c.id, "title": c.title,
                                  "verdict": c.verdict, "summary": c.summary});
                writeln!(self.out, "{line}")?;
            } else {
                writeln!(
                    self.out,
                    "[{t:>6.1}s] {}  {:<20} {}",
                    c.verdict.mark(),
                    c.title,
                    c.summary
                )?;
            }
        }
        self.out.flush()?;
        Ok(())
    }

    fn finish(&mut self, outcome: Outcome, checks: &[Check]) -> Result<()> {
        let t = self.secs();
        let steps: Vec<_> = self
            .healthy_at
            .iter()
            .map(|(id, title, at)| json!({"id": id, "title": title, "healthy_after_secs": at.map(round)}))
            .collect();
        let not_healthy: Vec<&str> = checks
            .iter()
            .filter(|c| !c.verdict.healthy())
            .map(|c| c.title)
            .collect();
        if self.json {
            let event = match outcome {
                Outcome::Healthy => "healthy",
                Outcome::Interrupted => "interrupted",
                Outcome::TimedOut => "timed-out",
            };
            let line = json!({"event": event, "after_secs": round(t), "steps": steps, "not_healthy": not_healthy});
            writeln!(self.out, "{line}")?;
        } else {
            match outcome {
                Outcome::Healthy => writeln!(self.out, "\nEverything healthy after {t:.1}s. Each step became healthy at:")?,
                Outcome::Interrupted => writeln!(self.out, "\nInterrupted after {t:.1}s; not healthy: {}", not_healthy.join(", "))?,
                Outcome::TimedOut => writeln!(self.out, "\nStill not healthy after {t:.1}s: {}\n  next: `rebox doctor` says why and what to do", not_healthy.join(", "))?,
            }
            for (_, title, at) in &self.healthy_at {
                match at {
                    Some(s) => writeln!(self.out, "  {title:<22} {s:>6.1}s")?,
                    None => writeln!(self.out, "  {title:<22}      -")?,
                }
            }
        }
        self.out.flush()?;
        Ok(())
    }
}

fn round(t: f64) -> f64 {
    (t * 10.0).round() / 10.0
}

/// A stand-in report while the server or its API cannot be reached.
fn unreachable_checks(config: &Config, target: &str, why: &str) -> Vec<Check> {
    status_checks(config, &Snapshot::unreachable(target.to_string(), why))
}

enum Wake {
    Changed,
    Interrupted,
    TimedOut,
}

/// Waits for a change (or `max`), Ctrl-C or the deadline.
async fn wait(
    notify: &Notify,
    sigint: &mut tokio::signal::unix::Signal,
    max: Duration,
    deadline: Option<tokio::time::Instant>,
) -> Wake {
    let until =
        deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400 * 365));
    tokio::select! {
        _ = notify.notified() => Wake::Changed,
        _ = tokio::time::sleep(max) => Wake::Changed,
        _ = sigint.recv() => Wake::Interrupted,
        _ = tokio::time::sleep_until(until) => Wake::TimedOut,
    }
}

/// Follows the recovery until every step is healthy, Ctrl-C or `timeout`.
pub async fn run<W: Write>(
    config: &Config,
    target: Target,
    policy: HostKeyPolicy,
    json: bool,
    timeout: Option<Duration>,
    out: &mut W,
) -> Result<Outcome> {
    let addr = target.addr();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut p = Printer {
        out,
        json,
        start: Instant::now(),
        last: HashMap::new(),
        healthy_at: vec![],
    };
    let notify = Arc::new(Notify::new());
    // Ctrl-C is caught from the start (before the first line is printed), so it always ends
    // the watch with its summary.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut last_checks = unreachable_checks(config, &addr, "not connected yet");
    macro_rules! interruptible {
        ($fut:expr) => {
            tokio::select! {
                r = $fut => r,
                _ = sigint.recv() => {
                    p.finish(Outcome::Interrupted, &last_checks)?;
                    return Ok(Outcome::Interrupted);
                }
            }
        };
    }
    macro_rules! pause {
        ($max:expr) => {
            match wait(&notify, &mut sigint, $max, deadline).await {
                Wake::Changed => {}
                Wake::Interrupted => {
                    p.finish(Outcome::Interrupted, &last_checks)?;
                    return Ok(Outcome::Interrupted);
                }
                Wake::TimedOut => {
                    p.finish(Outcome::TimedOut, &last_checks)?;
                    return Ok(Outcome::TimedOut);
                }
            }
        };
    }
    loop {
        // The server (it may still be booting).
        let remote = match interruptible!(Remote::connect(target.clone(), policy.clone())) {
            Ok(r) => r,
            Err(e) => {
                last_checks = unreachable_checks(
                    config,
                    &addr,
                    &format!("SSH to {addr}: {}", one_line(&format!("{e:#}"))),
                );
                p.update(&last_checks)?;
                pause!(RETRY);
                continue;
            }
        };
        // k3s's API.
        let cluster = loop {
            match interruptible!(Cluster::connect(&remote)) {
                Ok(c) => break Some(c),
                Err(e) => {
                    if remote.is_closed() {
                        break None;
                    }
                    // The first line: the cause without the "next:" advice.
                    let text = format!("{e:#}");
                    let first = text.lines().next().unwrap_or_default().to_string();
                    last_checks = unreachable_checks(config, &addr, &first);
                    p.update(&last_checks)?;
                    pause!(RETRY);
                }
            }
        };
        let Some(cluster) = cluster else {
            continue;
        };
        let watches = Watches::start(&remote, Arc::new(cluster), config, &notify);
        let first = Instant::now();
        while !watches.settled() && first.elapsed() < FIRST_SYNC {
            pause!(Duration::from_millis(100));
        }
        loop {
            let snap = watches.snapshot(&addr);
            last_checks = status_checks(config, &snap);
            p.update(&last_checks)?;
            if last_checks.iter().all(|c| c.verdict.healthy()) {
                p.finish(Outcome::Healthy, &last_checks)?;
                remote.close().await;
                return Ok(Outcome::Healthy);
            }
            if remote.is_closed() {
                break;
            }
            pause!(Duration::from_secs(5));
        }
        drop(watches);
    }
}
