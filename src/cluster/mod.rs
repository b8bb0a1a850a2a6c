//! The cluster client: kube-rs talking to the k3s API on the server through the SSH tunnel.
//!
//! The kubeconfig is the server's own (/etc/rancher/k3s/k3s.yaml, read with sudo, held in
//! memory only); its server address is swapped for the local end of a tunnel to the address
//! the server sees, and TLS is still verified against the k3s CA under the original name.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use zeroize::Zeroizing;

use crate::remote::{ExecOptions, Remote, Tunnel};

pub mod apply;
mod wait;

pub use wait::node_ready;

/// Where k3s writes its admin kubeconfig.
pub const K3S_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

/// A connected cluster client; the tunnel lives as long as the client.
pub struct Cluster {
    pub client: kube::Client,
    /// The API address as the server sees it, e.g. 127.0.0.1:6443.
    pub api_addr: String,
    /// Kinds resolved so far, by `group/version/kind` (see [`apply`]): the API server's
    /// answer for a served kind does not change within a run.
    kinds: std::sync::Mutex<
        std::collections::HashMap<
            String,
            (
                kube::discovery::ApiResource,
                kube::discovery::ApiCapabilities,
            ),
        >,
    >,
    _tunnel: Tunnel,
}

impl Cluster {
    /// Reads the server's kubeconfig, opens a tunnel to its API and checks that it answers.
    pub async fn connect(remote: &Remote) -> Result<Cluster> {
        let out = remote
            .sudo_with(
                &format!("cat {K3S_KUBECONFIG}"),
                ExecOptions {
                    quiet: true,
                    ..Default::default()
                },
            )
            .await?;
        if !out.success() {
            anyhow::bail!(crate::next::hinted(
                format!(
                    "cannot read {K3S_KUBECONFIG} on the server: {}",
                    out.stderr_str().trim()
                ),
                "is k3s installed and running? `rebox status` shows what is up"
            ));
        }
        let text = Zeroizing::new(
            String::from_utf8(out.stdout).context("the k3s kubeconfig is not UTF-8")?,
        );
        let mut kubeconfig =
            Kubeconfig::from_yaml(&text).context("parsing the server's k3s kubeconfig")?;

        let context_name = kubeconfig.current_context.clone().unwrap_or_default();
        let cluster_name = kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .or_else(|| kubeconfig.clusters.first().map(|c| c.name.clone()))
            .context("the k3s kubeconfig names no cluster")?;
        let cluster = kubeconfig
            .clusters
            .iter_mut()
            .find(|c| c.name == cluster_name)
            .and_then(|c| c.cluster.as_mut())
            .context("the k3s kubeconfig's context points at a missing cluster")?;
        let server: http::Uri = cluster
            .server
            .as_deref()
            .context("the k3s kubeconfig has no server address")?
            .parse()
            .context("the k3s kubeconfig's server address is not a URL")?;
        let host = server
            .host()
            .context("the k3s server address has no host")?
            .trim_matches(['[', ']'])
            .to_string();
        let port = server.port_u16().unwrap_or(443);
        let tunnel = remote.tunnel(&host, port).await?;
        cluster.server = Some(format!("https://127.0.0.1:{}", tunnel.local_addr.port()));
        // Verify the certificate against the name the server itself uses.
        cluster.tls_server_name = Some(host.clone());

        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .context("building the cluster client from the k3s kubeconfig")?;
        let client = kube::Client::try_from(config).context("creating the cluster client")?;
        let api_addr = format!("{host}:{port}");
        client.apiserver_version().await.with_context(|| {
            crate::next::hinted(
                format!("the k3s API at {api_addr} (through the SSH tunnel) does not answer"),
                "check `sudo systemctl status k3s` on the server, or `rebox status`",
            )
        })?;
        Ok(Cluster {
            client,
            api_addr,
            kinds: Default::default(),
            _tunnel: tunnel,
        })
    }

    /// The cluster IP of Service `namespace/name` (where the node reaches it, e.g. Vault's).
    pub async fn service_ip(&self, namespace: &str, name: &str) -> Result<String> {
        let api: kube::Api<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(self.client.clone(), namespace);
        let svc = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading Service {namespace}/{name}"))?
            .ok_or_else(|| anyhow::anyhow!("Service {namespace}/{name} does not exist yet"))?;
        svc.spec
            .as_ref()
            .and_then(|s| s.cluster_ip.clone())
            .filter(|ip| !ip.is_empty() && ip != "None")
            .ok_or_else(|| anyhow::anyhow!("Service {namespace}/{name} has no cluster IP"))
    }

    /// One key of a Secret, or None when the Secret or the key does not exist.
    pub async fn secret_value(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let api: kube::Api<Secret> = kube::Api::namespaced(self.client.clone(), namespace);
        let Some(mut secret) = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading Secret {namespace}/{name}"))?
        else {
            return Ok(None);
        };
        let value = secret
            .data
            .as_mut()
            .and_then(|d| d.remove(key))
            .map(|v| Zeroizing::new(v.0));
        Ok(value)
    }
}
