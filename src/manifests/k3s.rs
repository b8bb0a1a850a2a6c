//! The k3s host files: our own systemd unit (`/etc/systemd/system/k3s.service`) and
//! `/etc/rancher/k3s/config.yaml`, rendered from `[k3s]` and `[server]` in rebox.toml.

use anyhow::{Context, Result};
use minijinja::context;

use super::artifacts::Artifacts;
use super::templates;
use crate::config::Config;

/// Where the unit is installed on the server.
pub const UNIT_PATH: &str = "/etc/systemd/system/k3s.service";
/// Where k3s reads its configuration.
pub const CONFIG_PATH: &str = "/etc/rancher/k3s/config.yaml";
/// Where the k3s binary is installed (the unit's ExecStart).
pub const BINARY_PATH: &str = "/usr/local/bin/k3s";

/// The systemd unit (`Type=notify`, `ExecStart=/usr/local/bin/k3s server`).
pub fn render_k3s_unit(_config: &Config) -> Result<String> {
    let artifacts = Artifacts::embedded()?;
    let env = templates::environment();
    templates::render(
        &env,
        "k3s/k3s.service.j2",
        context! { k3s_version => artifacts.k3s.version },
    )
}

/// `/etc/rancher/k3s/config.yaml`: kubeconfig mode 0600, node name, TLS SANs (the configured
/// ones plus `[server] host`), disabled components.
pub fn render_k3s_config(config: &Config) -> Result<String> {
    let mut tls_san: Vec<String> = Vec::new();
    let host = config.server.host.trim();
    for san in config
        .k3s
        .tls_san
        .iter()
        .map(|s| s.trim())
        .chain((!host.is_empty()).then_some(host))
    {
        if !san.is_empty() && !tls_san.iter().any(|s| s == san) {
            tls_san.push(san.to_string());
        }
    }
    let env = templates::environment();
    let text = templates::render(
        &env,
        "k3s/config.yaml.j2",
        context! {
            node_name => config.k3s.node_name.trim(),
            tls_san => tls_san,
            disable => config.k3s.disable,
        },
    )?;
    // The file must stay valid YAML whatever the config holds.
    serde_saphyr::from_str::<serde_json::Value>(&text)
        .context("rendered k3s config.yaml is not valid YAML (a rendering defect)")?;
    Ok(text)
}
