//! The object store of lab-k3s: every object as JSON, a global `resourceVersion` counter,
//! the recent event history that watches resume from, and the in-process event bus that
//! part 2's controllers subscribe to ([`Store::subscribe`]).
//!
//! Contract followed: etcd-backed kube-apiserver semantics as clients see them: one global
//! monotonically increasing resourceVersion; each write gets a new one; events are delivered
//! in resourceVersion order; a watch can resume from any version still in the history and
//! gets 410 Expired before that. Persistence: one file per object under
//! `<data-dir>/server/db/lab-k3s/`, each written atomically (temp file, fsync, rename), so a
//! restart is a power loss: objects survive, watches end, history starts afresh.
//! Left out: compaction by time, multi-object transactions, etcd's revision per key.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use serde_json::Value;
use tokio::sync::broadcast;

use super::registry::{self, ResourceType};
use super::schema::CrdSchema;

/// How many events watches can resume from.
const HISTORY: usize = 4096;

#[derive(Clone, Debug)]
pub struct Event {
    pub rv: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub group: String,
    pub plural: String,
    /// "" for cluster-scoped objects.
    pub namespace: String,
    pub object: Value,
    /// The previous version for `MODIFIED` (watches with selectors need it).
    pub old: Option<Value>,
}

type Bucket = BTreeMap<(String, String), Value>;

pub struct Inner {
    pub rv: u64,
    pub types: Vec<ResourceType>,
    objects: BTreeMap<(String, String), Bucket>,
    history: VecDeque<Event>,
    /// Watches may resume from any version >= this one.
    pub first_rv: u64,
    pub schemas: HashMap<(String, String), Arc<CrdSchema>>,
    logs: BTreeMap<(String, String), String>,
    dir: PathBuf,
    tx: broadcast::Sender<Event>,
}

pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Event>,
}

/// Writes `data` to `path` atomically with `mode`: temp file in the same dir, fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().context("path without parent")?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    // The rename itself must survive a power loss too.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn obj_path(dir: &Path, group: &str, plural: &str, ns: &str, name: &str) -> PathBuf {
    let g = if group.is_empty() { "core" } else { group };
    let n = if ns.is_empty() { "_cluster" } else { ns };
    dir.join("objects")
        .join(g)
        .join(plural)
        .join(n)
        .join(format!("{name}.json"))
}

impl Store {
    /// Opens (or creates) the store under `<data_dir>/server/db/lab-k3s`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Store> {
        let dir = data_dir.join("server/db/lab-k3s");
        std::fs::create_dir_all(dir.join("objects"))?;
        let rv: u64 = std::fs::read_to_string(dir.join("rv"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let (tx, _) = broadcast::channel(HISTORY);
        let mut inner = Inner {
            rv,
            types: registry::builtins(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            first_rv: rv,
            schemas: HashMap::new(),
            logs: BTreeMap::new(),
            dir: dir.clone(),
            tx: tx.clone(),
        };
        let mut files = vec![];
        collect_json(&dir.join("objects"), &mut files)?;
        let mut max_rv = rv;
        for f in files {
            let text = std::fs::read_to_string(&f)?;
            let obj: Value = serde_json::from_str(&text)
                .with_context(|| format!("corrupt object file {}", f.display()))?;
            let rel = f.strip_prefix(dir.join("objects"))?;
            let parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let [g, plural, ns, _] = &parts[..] else {
                continue;
            };
            let group = if g == "core" { "" } else { g.as_str() };
            let ns = if ns == "_cluster" { "" } else { ns.as_str() };
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let Some(orv) = obj["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
            {
                max_rv = max_rv.max(orv);
            }
            inner
                .objects
                .entry((group.to_string(), plural.clone()))
                .or_default()
                .insert((ns.to_string(), name), obj);
        }
        let logs = dir.join("logs");
        for ns in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if let (Some(pod), Ok(text)) =
                    (name.strip_suffix(".log"), std::fs::read_to_string(f.path()))
                {
                    let ns = ns.file_name().to_string_lossy().into_owned();
                    inner.logs.insert((ns, pod.to_string()), text);
                }
            }
        }
        inner.rv = max_rv;
        inner.first_rv = max_rv;
        let crds: Vec<Value> =
            inner.list("apiextensions.k8s.io", "customresourcedefinitions", None);
        for crd in crds {
            inner.register_crd(&crd);
        }
        Ok(Store {
            inner: Mutex::new(inner),
            tx,
        })
    }

    /// lab-k3s's data dir (the store lives in `<data dir>/server/db/lab-k3s`).
    pub fn data_dir(&self) -> PathBuf {
        let dir = self.lock().dir.clone();
        dir.ancestors().nth(3).map(Path::to_path_buf).unwrap_or(dir)
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every event from now on, in resourceVersion order (the hook for in-process controllers).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Stores the text `GET pods/<name>/log` returns (controllers of part 2 fill it).
    /// Kept in `<db>/logs/<namespace>/<pod>.log`, so logs survive a restart as on a node.
    pub fn set_pod_log(&self, namespace: &str, pod: &str, text: &str) -> anyhow::Result<()> {
        let mut inner = self.lock();
        let path = inner
            .dir
            .join("logs")
            .join(namespace)
            .join(format!("{pod}.log"));
        write_atomic(&path, text.as_bytes(), 0o600)?;
        inner
            .logs
            .insert((namespace.into(), pod.into()), text.into());
        Ok(())
    }
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            collect_json(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "json")
            && !e.file_name().to_string_lossy().starts_with('.')
        {
            out.push(p);
        }
    }
    Ok(())
}

impl Inner {
    pub fn get(&self, group: &str, plural: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(group.into(), plural.into()))?
            .get(&(ns.into(), name.into()))
    }

    /// Objects of one resource, in one namespace or all (`None`), ordered by namespace/name.
    pub fn list(&self, group: &str, plural: &str, ns: Option<&str>) -> Vec<Value> {
        let Some(b) = self.objects.get(&(group.into(), plural.into())) else {
            return vec![];
        };
        b.iter()
            .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Namespaced (group, plural) pairs that hold objects in `ns`.
    pub fn resources_in_namespace(&self, ns: &str) -> Vec<(String, String)> {
        self.objects
            .iter()
            .filter(|(_, b)| b.keys().any(|(n, _)| n == ns))
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn pod_log(&self, ns: &str, pod: &str) -> Option<String> {
        self.logs.get(&(ns.into(), pod.into())).cloned()
    }

    /// Writes `obj` (assigning the next resourceVersion) and emits `ADDED`/`MODIFIED`.
    pub fn put(
        &mut self,
        group: &str,
        plural: &str,
        ns: &str,
        mut obj: Value,
    ) -> anyhow::Result<Value> {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let path = obj_path(&self.dir, group, plural, ns, &name);
        write_atomic(&path, &serde_json::to_vec(&obj)?, 0o600)?;
        write_atomic(&self.dir.join("rv"), self.rv.to_string().as_bytes(), 0o600)?;
        let old = self
            .objects
            .entry((group.into(), plural.into()))
            .or_default()
            .insert((ns.into(), name), obj.clone());
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.emit(kind, group, plural, ns, obj.clone(), old);
        Ok(obj)
    }

    /// Removes an object and emits `DELETED` (the object carries a new resourceVersion).
    pub fn remove(
        &mut self,
        group: &str,
        plural: &str,
        ns: &str,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        let Some(mut obj) = self
            .objects
            .get_mut(&(group.into(), plural.into()))
            .and_then(|b| b.remove(&(ns.into(), name.into())))
        else {
            return Ok(None);
        };
        let path = obj_path(&self.dir, group, plural, ns, name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.rv += 1;
        write_atomic(&self.dir.join("rv"), self.rv.to_string().as_bytes(), 0o600)?;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        if group == "apiextensions.k8s.io" && plural == "customresourcedefinitions" {
            self.unregister_crd(name);
        }
        self.emit("DELETED", group, plural, ns, obj.clone(), None);
        Ok(Some(obj))
    }

    fn emit(
        &mut self,
        kind: &'static str,
        group: &str,
        plural: &str,
        ns: &str,
        object: Value,
        old: Option<Value>,
    ) {
        let ev = Event {
            rv: self.rv,
            kind,
            group: group.into(),
            plural: plural.into(),
            namespace: ns.into(),
            object,
            old,
        };
        if self.history.len() == HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.first_rv = old.rv;
            }
        }
        self.history.push_back(ev.clone());
        let _ = self.tx.send(ev);
    }

    /// Events after `rv` still in the history plus a receiver for later ones, or the oldest
    /// resumable version when `rv` is too old.
    pub fn watch_from(&self, rv: u64) -> Result<(Vec<Event>, broadcast::Receiver<Event>), u64> {
        if rv < self.first_rv {
            return Err(self.first_rv);
        }
        let past = self.history.iter().filter(|e| e.rv > rv).cloned().collect();
        Ok((past, self.tx.subscribe()))
    }

    /// Registers the resource types and compiled schemas of a CRD object.
    pub fn register_crd(&mut self, crd: &Value) {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.unregister_crd(&name);
        self.types.extend(registry::from_crd(crd));
        for ver in crd["spec"]["versions"].as_array().into_iter().flatten() {
            let v = ver["name"].as_str().unwrap_or_default().to_string();
            let schema = CrdSchema::compile(&ver["schema"]["openAPIV3Schema"]);
            self.schemas.insert((name.clone(), v), Arc::new(schema));
        }
    }

    fn unregister_crd(&mut self, name: &str) {
        self.types.retain(|t| t.crd.as_deref() != Some(name));
        self.schemas.retain(|(n, _), _| n != name);
    }

    pub fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }
}
