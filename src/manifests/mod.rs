//! The embedded bootstrap rendered from rebox.toml: the k3s host files, the addons (HelmChart
//! objects for k3s's helm-controller), the ClusterSecretStore, the Argo CD repository and root
//! Application, and the self-healing CronJobs.
//!
//! One render feeds `rebox plan`, the apply phases and the tests, so it is deterministic: the
//! same config and inputs give the same bytes. Each [`Manifest`] is one embedded template; its
//! `yaml` is the rendered text (comments kept, no secrets) and `objects` the parsed Kubernetes
//! objects, in apply order. Secret values are never rendered: they are listed as
//! [`SecretInput`]s and merged in at apply time ([`Manifest::objects_with_secrets`]).

mod artifacts;
mod inputs;
mod k3s;
mod secrets;
mod templates;

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use base64::Engine;
use minijinja::context;
use serde::Serialize;
use serde_json::Value;

pub use artifacts::{sha256_in_listing, Artifacts, Chart, K3sAsset, K3sRelease};
pub use inputs::{RenderInputs, BUNDLE_CHARTS_DIR, BUNDLE_SHA256SUMS};
pub use k3s::{render_k3s_config, render_k3s_unit, BINARY_PATH, CONFIG_PATH, UNIT_PATH};
pub use secrets::{unseal_key_secret, SecretInput};

use crate::config::{Config, RepoAuth};

/// The apply step a manifest belongs to, in rebuild order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// Every namespace the addons and CronJobs use.
    Namespaces,
    Longhorn,
    /// The empty Vault PVC: fresh path only (the restore path recreates it from the NAS).
    VaultStorage,
    Vault,
    ExternalSecrets,
    /// The ClusterSecretStore (needs ESO's CRDs, so after [`Group::ExternalSecrets`]).
    SecretStore,
    ArgoCd,
    /// The repository Secret and the root Application (need Argo CD's CRDs).
    GitOps,
    CronJobs,
}

impl Group {
    /// Stable short name (`vault-storage`), for plans and file names.
    pub fn name(self) -> &'static str {
        match self {
            Group::Namespaces => "namespaces",
            Group::Longhorn => "longhorn",
            Group::VaultStorage => "vault-storage",
            Group::Vault => "vault",
            Group::ExternalSecrets => "external-secrets",
            Group::SecretStore => "secret-store",
            Group::ArgoCd => "argo-cd",
            Group::GitOps => "gitops",
            Group::CronJobs => "cronjobs",
        }
    }

    /// Whether the restore path applies this group (it recreates the Vault PVC itself).
    pub fn on_restore_path(self) -> bool {
        self != Group::VaultStorage
    }
}

/// One rendered embedded template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    pub group: Group,
    /// The template's path without `.yaml.j2`, e.g. `addons/longhorn`.
    pub name: String,
    /// The rendered YAML (multi-document, comments kept, no secret values).
    pub yaml: String,
    /// The Kubernetes objects in `yaml`, in order; each has apiVersion, kind, metadata.name.
    pub objects: Vec<Value>,
    /// Secret values to merge in at apply time.
    pub secret_inputs: Vec<SecretInput>,
    /// Config fields that must be set before this manifest can be applied (e.g.
    /// `argocd.repo_url`); empty when it is ready.
    pub missing_config: Vec<String>,
}

/// `http://<service>.<namespace>.svc:<port>`: Vault as seen from inside the cluster.
pub fn vault_in_cluster_addr(config: &Config) -> String {
    let v = &config.vault;
    format!("http://{}.{}.svc:{}", v.service, v.namespace, v.port)
}

/// Renders every manifest, in apply order.
pub fn render_all(config: &Config, inputs: &RenderInputs) -> Result<Vec<Manifest>> {
    let artifacts = Artifacts::embedded()?;
    for key in inputs.chart_tarballs.keys() {
        artifacts
            .chart(key)
            .context("the render inputs hold a tarball for an unknown chart")?;
    }
    let env = templates::environment();
    let cfg = minijinja::Value::from_serialize(config);
    let vault_addr = vault_in_cluster_addr(config);
    let chart = |key: &str| -> Result<minijinja::Value> {
        let pinned = artifacts.chart(key)?;
        let content = inputs
            .chart_tarballs
            .get(key)
            .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes));
        Ok(context! {
            chart => pinned.chart,
            repo => pinned.repo,
            version => pinned.version,
            content => content,
        })
    };
    let namespaces: BTreeSet<&str> = [
        config.longhorn.namespace.as_str(),
        config.vault.namespace.as_str(),
        config.eso.namespace.as_str(),
        config.argocd.namespace.as_str(),
    ]
    .into_iter()
    .collect();

    let mut out = Vec::new();
    let mut add = |group: Group, name: &str, context: minijinja::Value| -> Result<()> {
        let path = format!("{name}.yaml.j2");
        let yaml = templates::render(&env, &path, context)?;
        let objects = parse_objects(&yaml).with_context(|| format!("rendered {name}"))?;
        out.push(Manifest {
            group,
            name: name.to_string(),
            yaml,
            objects,
            secret_inputs: Vec::new(),
            missing_config: Vec::new(),
        });
        Ok(())
    };

    add(
        Group::Namespaces,
        "addons/namespaces",
        context! { namespaces => namespaces },
    )?;
    add(
        Group::Longhorn,
        "addons/longhorn",
        context! { cfg => cfg.clone(), chart => chart("longhorn")? },
    )?;
    add(
        Group::VaultStorage,
        "addons/vault-storage",
        context! { cfg => cfg.clone() },
    )?;
    add(
        Group::Vault,
        "addons/vault",
        context! { cfg => cfg.clone(), chart => chart("vault")? },
    )?;
    add(
        Group::ExternalSecrets,
        "addons/external-secrets",
        context! { cfg => cfg.clone(), chart => chart("external-secrets")? },
    )?;
    add(
        Group::SecretStore,
        "addons/cluster-secret-store",
        context! { cfg => cfg.clone(), vault_addr => vault_addr.clone() },
    )?;
    add(
        Group::ArgoCd,
        "addons/argo-cd",
        context! { cfg => cfg.clone(), chart => chart("argo-cd")? },
    )?;
    add(
        Group::GitOps,
        "gitops/repository",
        context! { cfg => cfg.clone() },
    )?;
    add(
        Group::GitOps,
        "gitops/root-app",
        context! { cfg => cfg.clone() },
    )?;
    add(
        Group::CronJobs,
        "cronjobs/vault-auto-unseal",
        context! {
            cfg => cfg.clone(),
            name => config.vault.unseal_cronjob,
            namespace => config.vault.namespace,
            vault_addr => vault_addr.clone(),
            script => crate::embedded::text("cronjobs/vault-auto-unseal.sh")?,
        },
    )?;
    add(
        Group::CronJobs,
        "cronjobs/eso-recovery",
        context! {
            cfg => cfg.clone(),
            name => config.eso.recovery_cronjob,
            namespace => config.eso.namespace,
            vault_addr => vault_addr,
            script => crate::embedded::text("cronjobs/eso-recovery.sh")?,
        },
    )?;

    annotate(config, &mut out);
    Ok(out)
}

/// Adds what the templates cannot say: secret inputs and unset config fields.
fn annotate(config: &Config, manifests: &mut [Manifest]) {
    for m in manifests.iter_mut() {
        match m.name.as_str() {
            "addons/longhorn" if config.nas.backup_target.trim().is_empty() => {
                m.missing_config.push("nas.backup_target".into());
            }
            "gitops/repository" | "gitops/root-app" if config.argocd.repo_url.trim().is_empty() => {
                m.missing_config.push("argocd.repo_url".into());
            }
            _ => {}
        }
        if m.name == "gitops/repository" {
            let key = match config.argocd.repo_auth {
                RepoAuth::None => None,
                RepoAuth::Https => Some("password"),
                RepoAuth::Ssh => Some("sshPrivateKey"),
            };
            if let Some(key) = key {
                m.secret_inputs.push(SecretInput {
                    namespace: config.argocd.namespace.clone(),
                    secret: config.argocd.repo_secret.clone(),
                    key: key.into(),
                    source: config.argocd.repo_credential.clone(),
                });
                if config.argocd.repo_auth == RepoAuth::Https
                    && config.argocd.repo_username.trim().is_empty()
                {
                    m.missing_config.push("argocd.repo_username".into());
                }
            }
        }
    }
}

/// Parses rendered multi-document YAML into Kubernetes objects (empty documents skipped);
/// each must carry apiVersion, kind and metadata.name.
pub fn parse_objects(yaml: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(yaml).context("the rendered text is not valid YAML")?;
    let mut objects = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let has = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
        if !doc.is_object()
            || !has(&doc["apiVersion"])
            || !has(&doc["kind"])
            || !has(&doc["metadata"]["name"])
        {
            bail!(
                "document {} is not a Kubernetes object with apiVersion, kind and metadata.name",
                i + 1
            );
        }
        objects.push(doc);
    }
    Ok(objects)
}
