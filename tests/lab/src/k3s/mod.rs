//! `lab-k3s`: the Kubernetes API server stand-in (issue 4, item 1), uploaded by rebox in
//! place of the k3s binary and usable by real `kubectl` and kube-rs.
//!
//! Contract followed: `../shared/reference/platform-facts.md` §3 (k3s files: kubeconfig,
//! token, data dir, config.yaml) and §6 (Kubernetes API conventions: server-side apply,
//! patch types, `kubectl create job --from=cronjob`), and where the card is silent the
//! Kubernetes API concepts documentation. Each submodule names what it follows and leaves
//! out:
//!
//! - [`config`]: `server` flags and `/etc/rancher/k3s/config.yaml`;
//! - [`tls`], [`kubeconfig`]: CA, serving and admin client certificates, kubeconfig, tokens;
//! - [`api`]: HTTP routing and authentication; [`discovery`], [`openapi`], [`table`];
//! - [`objects`]: create/update/patch/delete semantics; [`admit`], [`typed`], [`schema`],
//!   [`immutable`]: validation; [`protobuf`]: kubectl's protobuf bodies; [`defaults`];
//!   [`patch`], [`ssa`]: patch types and managed fields;
//! - [`store`]: objects, resourceVersions, persistence, the event bus; [`watch`];
//!   [`selectors`]; [`status`]: Kubernetes `Status` errors.
//! - [`faults`]: the lab's fault switches (`<data-dir>/lab-faults.json`).
//! - [`webhooks`]: the charts' admission webhooks, refusing writes until they serve.
//!
//! Left out (on purpose): controllers (part 2 runs them in this process through
//! [`store::Store::subscribe`]), kubelet, networking, RBAC, API
//! aggregation, protobuf responses.

pub mod admit;
pub mod api;
pub mod config;
pub mod controllers;
pub mod defaults;
pub mod discovery;
pub mod faults;
pub mod immutable;
pub mod kubeconfig;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod satoken;
pub mod schema;
pub mod selectors;
pub mod ssa;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;
pub mod typed;
pub mod watch;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use tower::ServiceExt;

pub use config::Options;
pub use store::Store;

/// Objects k3s has right after its first start: the four system namespaces, the node
/// (Ready), and the `kubernetes` Service.
fn bootstrap(store: &Store, node_name: &str) -> anyhow::Result<()> {
    let mut inner = store.lock();
    let types = inner.types.clone();
    let rt = |kind: &str| {
        types
            .iter()
            .find(|t| t.kind == kind && t.crd.is_none())
            .cloned()
            .expect("builtin")
    };
    let mut ctx = admit::WriteCtx {
        validation: admit::FieldValidation::Strict,
        warnings: vec![],
        dry_run: false,
        manager: "k3s".into(),
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        if inner.get("", "namespaces", "", ns).is_none() {
            objects::create(
                &mut inner,
                &rt("Namespace"),
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                &mut ctx,
            )
            .map_err(|e| anyhow::anyhow!(e.message))?;
        }
    }
    // Stores written before the lab had the serviceaccounts-controller get theirs too.
    for ns in inner.list("", "namespaces", None) {
        let name = ns["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        objects::ensure_default_service_account(&mut inner, &name);
    }
    if inner.get("", "nodes", "", node_name).is_none() {
        let now = defaults::now();
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node_name, "labels": {
                "kubernetes.io/hostname": node_name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/control-plane": "true", "node.kubernetes.io/instance-type": "k3s",
            }},
            "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"]},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "nodeInfo": {"kubeletVersion": discovery::GIT_VERSION, "kubeProxyVersion": discovery::GIT_VERSION, "operatingSystem": "linux", "architecture": "amd64",
                              "containerRuntimeVersion": "containerd://2.1.5-k3s1", "osImage": "Ubuntu 26.04 LTS", "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
            },
        });
        objects::create(&mut inner, &rt("Node"), "", node, &mut ctx)
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    if inner.get("", "services", "default", "kubernetes").is_none() {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                         "spec": {"clusterIP": "10.43.0.1", "clusterIPs": ["10.43.0.1"], "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}});
        objects::create(&mut inner, &rt("Service"), "default", svc, &mut ctx)
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    Ok(())
}

/// A prepared server: store opened, certificates and kubeconfig written, listener bound.
pub struct Prepared {
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
}

/// Opens the data dir, binds `opts.listen` (port 0 allowed) and writes the kubeconfig with
/// the bound address and the token files.
pub async fn prepare(opts: &Options) -> anyhow::Result<Prepared> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating data dir {}", opts.data_dir.display()))?;
    let store = Arc::new(Store::open(&opts.data_dir)?);
    bootstrap(&store, &opts.node_name)?;
    let pki = tls::load_or_create(&opts.data_dir, &opts.tls_san)?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    kubeconfig::write_kubeconfig(
        &opts.kubeconfig,
        &format!("https://{addr}"),
        &pki,
        opts.kubeconfig_mode,
    )
    .with_context(|| format!("writing kubeconfig {}", opts.kubeconfig.display()))?;
    kubeconfig::write_tokens(&opts.data_dir, &pki)?;
    // Part 2: the simulated controllers (helm, workloads, jobs, ...) in this process.
    controllers::spawn_all(
        store.clone(),
        controllers::LabEnv::from_env(&opts.data_dir, addr, pki.ca_pem.clone()),
    );
    Ok(Prepared {
        addr,
        store,
        listener,
        tls: tls::server_config(&pki)?,
    })
}

/// Serves HTTPS until the listener fails (or the task is dropped).
pub async fn serve(p: Prepared) -> anyhow::Result<()> {
    let app = Arc::new(api::App {
        store: p.store.clone(),
        server_addr: p.addr.to_string(),
    });
    let router = axum::Router::new().fallback(api::handle).with_state(app);
    let acceptor = tokio_rustls::TlsAcceptor::from(p.tls);
    loop {
        let (tcp, _) = p.listener.accept().await?;
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let peer = api::Peer {
                authenticated: tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty()),
            };
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer);
                    router.clone().oneshot(req.map(axum::body::Body::new))
                },
            );
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
        });
    }
}

/// A lab-k3s running inside this process (for tests and part 2's controllers); stopped
/// abruptly, like a power loss, when dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub store: Arc<Store>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn start(opts: Options) -> anyhow::Result<Running> {
        let p = prepare(&opts).await?;
        let (addr, store) = (p.addr, p.store.clone());
        let task = tokio::spawn(serve(p));
        Ok(Running {
            addr,
            kubeconfig: opts.kubeconfig,
            store,
            task,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}
