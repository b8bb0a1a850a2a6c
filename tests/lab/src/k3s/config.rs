//! Command line and `/etc/rancher/k3s/config.yaml` of `lab-k3s server`.
//!
//! Contract followed: k3s's server flags and config file (keys = long flag names, lists for
//! repeatable flags, the command line wins): `--data-dir/-d`, `--write-kubeconfig/-o`,
//! `--write-kubeconfig-mode`, `--tls-san`, `--node-name`, `--bind-address`,
//! `--https-listen-port`, `--config/-c`, plus the lab's own `--listen ADDR:PORT`. Every
//! other k3s flag is accepted and ignored (with its value, if it has one).
//! Left out: `config.yaml.d` drop-ins, `key+:` appends, `K3S_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub kubeconfig: PathBuf,
    pub kubeconfig_mode: u32,
    pub tls_san: Vec<String>,
    pub node_name: String,
}

/// Flags known to be boolean in k3s (they take no value).
const BOOL_FLAGS: &[&str] = &[
    "cluster-init",
    "disable-cloud-controller",
    "disable-kube-proxy",
    "disable-network-policy",
    "disable-helm-controller",
    "secrets-encryption",
    "selinux",
    "rootless",
    "prefer-bundled-bin",
    "debug",
    "embedded-registry",
    "disable-scheduler",
    "disable-apiserver",
    "disable-etcd",
    "disable-controller-manager",
    "protect-kernel-defaults",
    "flannel-ipv6-masq",
    "flannel-external-ip",
    "egress-selector-mode",
    "supervisor-metrics",
    "write-kubeconfig-group",
];

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Parses the arguments after `server`.
pub fn parse_server_args(args: &[String]) -> anyhow::Result<Options> {
    let mut cli: Vec<(String, String)> = vec![];
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let Some(flag) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            bail!("unexpected argument {a:?} (lab-k3s server takes only flags)");
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None if BOOL_FLAGS.contains(&flag) => (flag.to_string(), "true".into()),
            None => {
                let v = args.get(i + 1).filter(|v| !v.starts_with('-')).cloned();
                if v.is_some() {
                    i += 1;
                }
                (flag.to_string(), v.unwrap_or_else(|| "true".into()))
            }
        };
        let name = match name.as_str() {
            "d" => "data-dir".into(),
            "o" => "write-kubeconfig".into(),
            "c" => "config".into(),
            _ => name,
        };
        cli.push((name, value));
        i += 1;
    }
    let get = |k: &str| {
        cli.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let config_path = get("config").unwrap_or_else(|| "/etc/rancher/k3s/config.yaml".into());
    let file: Value = match std::fs::read_to_string(&config_path) {
        Ok(text) => {
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {config_path}"))?
        }
        Err(_) if get("config").is_none() => Value::Null,
        Err(e) => return Err(e).with_context(|| format!("reading --config {config_path}")),
    };
    let from_file = |k: &str| match &file[k] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let opt = |k: &str| get(k).or_else(|| from_file(k));
    let mut tls_san: Vec<String> = cli
        .iter()
        .filter(|(n, _)| n == "tls-san")
        .flat_map(|(_, v)| v.split(',').map(String::from).collect::<Vec<_>>())
        .collect();
    if tls_san.is_empty() {
        match &file["tls-san"] {
            Value::String(s) => tls_san.extend(s.split(',').map(String::from)),
            Value::Array(a) => {
                tls_san.extend(a.iter().filter_map(|x| x.as_str().map(String::from)))
            }
            _ => {}
        }
    }
    let listen = match opt("listen") {
        Some(l) => l
            .parse()
            .with_context(|| format!("--listen {l:?} is not ADDR:PORT"))?,
        None => {
            let ip = opt("bind-address").unwrap_or_else(|| "127.0.0.1".into());
            let port = opt("https-listen-port").unwrap_or_else(|| "6443".into());
            format!("{ip}:{port}")
                .parse()
                .with_context(|| format!("bad --bind-address/--https-listen-port {ip}:{port}"))?
        }
    };
    let mode = opt("write-kubeconfig-mode").unwrap_or_else(|| "0600".into());
    Ok(Options {
        data_dir: opt("data-dir")
            .unwrap_or_else(|| "/var/lib/rancher/k3s".into())
            .into(),
        listen,
        kubeconfig: opt("write-kubeconfig")
            .unwrap_or_else(|| "/etc/rancher/k3s/k3s.yaml".into())
            .into(),
        kubeconfig_mode: u32::from_str_radix(mode.trim_start_matches("0o"), 8)
            .with_context(|| format!("write-kubeconfig-mode {mode:?} is not octal"))?,
        tls_san,
        node_name: opt("node-name").unwrap_or_else(hostname),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3s_server_flags_and_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, "write-kubeconfig-mode: \"0644\"\ntls-san: [a.example, 10.0.0.1]\nnode-name: box\ndata-dir: /from/file\n").unwrap();
        let args: Vec<String> = [
            "--config",
            cfg.to_str().unwrap(),
            "--cluster-init",
            "--disable",
            "traefik",
            "-d",
            "/cli/wins",
            "--https-listen-port=7443",
            "--node-label",
            "x=y",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = parse_server_args(&args).unwrap();
        assert_eq!(o.data_dir, PathBuf::from("/cli/wins"));
        assert_eq!(o.kubeconfig_mode, 0o644);
        assert_eq!(o.tls_san, ["a.example", "10.0.0.1"]);
        assert_eq!(o.node_name, "box");
        assert_eq!(o.listen.to_string(), "127.0.0.1:7443");
        assert_eq!(o.kubeconfig, PathBuf::from("/etc/rancher/k3s/k3s.yaml"));
        assert!(parse_server_args(&["positional".to_string()]).is_err());
    }
}
