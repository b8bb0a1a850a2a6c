//! `rebox rebuild`: the node-destruction rebuild as a list of phases (see design.md, "Order of
//! a rebuild"). This module holds the flow's context and the list; each phase group lives in
//! its own file.

mod addons;
mod host;
mod k3s;
pub mod source;

use anyhow::Result;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::flow::Phase;
use crate::manifests::{Artifacts, Group, RenderInputs};
use crate::remote::Remote;
use source::K3sBinary;

/// Everything the rebuild phases share.
pub struct Ctx {
    pub config: Config,
    pub remote: Remote,
    pub artifacts: Artifacts,
    pub inputs: RenderInputs,
    /// The checked k3s binary on the laptop.
    pub k3s: K3sBinary,
    /// Overwrite an existing k3s install that rebox did not make.
    pub force: bool,
    cluster: Option<Cluster>,
}

impl Ctx {
    pub fn new(
        config: Config,
        remote: Remote,
        artifacts: Artifacts,
        inputs: RenderInputs,
        k3s: K3sBinary,
        force: bool,
    ) -> Ctx {
        Ctx {
            config,
            remote,
            artifacts,
            inputs,
            k3s,
            force,
            cluster: None,
        }
    }

    /// The cluster client, connected on first use (k3s must be running).
    pub async fn cluster(&mut self) -> Result<&Cluster> {
        if self.cluster.is_none() {
            self.cluster = Some(Cluster::connect(&self.remote).await?);
        }
        Ok(self.cluster.as_ref().expect("just connected"))
    }

    /// Forgets the cluster connection (after k3s restarts, its tunnel may be stale).
    pub fn drop_cluster(&mut self) {
        self.cluster = None;
    }

    /// The node name k3s registers: the configured one, else the server's hostname.
    pub async fn node_name(&self) -> Result<String> {
        if !self.config.k3s.node_name.is_empty() {
            return Ok(self.config.k3s.node_name.clone());
        }
        Ok(self
            .remote
            .exec("hostname")
            .await?
            .stdout_str()
            .trim()
            .to_string())
    }
}

/// The phases of a fresh rebuild, in order.
pub fn fresh_phases() -> Vec<Box<dyn Phase<Ctx>>> {
    vec![
        Box::new(host::Guard),
        Box::new(host::Prerequisites),
        Box::new(k3s::Binary),
        Box::new(k3s::Configuration),
        Box::new(k3s::Running),
        Box::new(addons::Apply {
            group: Group::Namespaces,
            title: "Create the namespaces",
        }),
        Box::new(addons::Apply {
            group: Group::Longhorn,
            title: "Install Longhorn with the NAS as its backup target",
        }),
        Box::new(addons::Apply {
            group: Group::VaultStorage,
            title: "Create Vault's volume (vault-data-lh)",
        }),
        Box::new(addons::Apply {
            group: Group::Vault,
            title: "Install Vault",
        }),
    ]
}
