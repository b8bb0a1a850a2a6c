//! rebox.toml: the homelab's names and the server's address.
//!
//! Every field has a default equal to the author's homelab, so a real config only needs the
//! host, the NAS and the Git repository. Unknown fields are errors (a typo must not silently
//! fall back to a default), and errors name the file, line and field.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

mod template;

pub const DEFAULT_FILE: &str = "rebox.toml";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Name recorded in offline backups and reports.
    pub cluster_name: String,
    pub server: Server,
    pub requirements: Requirements,
    pub nas: Nas,
    pub vault: Vault,
    pub eso: Eso,
    pub argocd: ArgoCd,
    pub k3s: K3s,
    pub longhorn: Longhorn,
    pub cronjobs: CronJobs,
    pub restore: Restore,
    /// Secrets the apps need before GitOps can run (e.g. a DNS provider's API token), filled
    /// on `--restore-from-nas` from the offline backup's extra secrets or a prompt.
    pub bootstrap_secrets: Vec<BootstrapSecret>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// Host name, address, or ~/.ssh/config alias. Empty until configured.
    pub host: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_files: Vec<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub connect_timeout_secs: u64,
    pub keepalive_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Requirements {
    pub os_id: String,
    pub os_version: String,
    pub architectures: Vec<String>,
    pub min_cpus: u32,
    pub min_memory_mib: u64,
    /// Free space on the filesystem holding /var/lib (k3s and Longhorn data).
    pub min_disk_gib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Nas {
    /// Longhorn backup target, e.g. nfs://nas.lan:/volume1/longhorn-backups
    pub backup_target: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Vault {
    pub namespace: String,
    pub pod: String,
    pub service: String,
    pub port: u16,
    pub pvc: String,
    pub unseal_secret: String,
    pub unseal_secret_key: String,
    pub unseal_cronjob: String,
    /// Size and StorageClass of the PVC created on the fresh path (a restore recreates it).
    pub pvc_size: String,
    pub pvc_storage_class: String,
    /// Unseal key shares and threshold for a fresh `vault operator init` (the homelab: 1 of 1).
    pub key_shares: u32,
    pub key_threshold: u32,
    /// How long Vault's API may take to answer once its chart is installed: the image pull
    /// and the Longhorn volume's provisioning and attach come first (seconds).
    pub start_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Eso {
    pub namespace: String,
    pub store: String,
    pub deployments: Vec<String>,
    pub recovery_cronjob: String,
    /// Vault KV mount and engine version the ClusterSecretStore reads.
    pub vault_kv_path: String,
    pub vault_kv_version: String,
    /// Vault Kubernetes auth mount and the role (and policy of the same name) bound to ESO's
    /// service account.
    pub vault_auth_mount: String,
    pub vault_role: String,
    /// The service account ESO's controller runs as (the chart's release name).
    pub service_account: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ArgoCd {
    pub namespace: String,
    pub repo_url: String,
    pub path: String,
    pub revision: String,
    /// Name and project of the root (app-of-apps) Application.
    pub app_name: String,
    pub project: String,
    /// The repository Secret Argo CD reads (namespace `namespace`).
    pub repo_secret: String,
    /// `none` (public repository), `https` (username + password/token) or `ssh` (private key).
    pub repo_auth: RepoAuth,
    /// HTTPS user name (not a secret); the password/token comes from `repo_credential`.
    pub repo_username: String,
    /// Name of the offline backup's extra secret (or prompt) holding the password/token or the
    /// SSH private key. Never a value: the secret itself is supplied at apply time.
    pub repo_credential: String,
}

/// How Argo CD authenticates to the Git repository.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RepoAuth {
    #[default]
    None,
    Https,
    Ssh,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct K3s {
    /// Node name; empty means the server's host name.
    pub node_name: String,
    /// Extra names/addresses in the API server certificate (the `[server] host` is added).
    pub tls_san: Vec<String>,
    /// Packaged components to disable, e.g. ["traefik", "servicelb", "local-storage"].
    pub disable: Vec<String>,
    /// Where to download k3s releases from when no `--bundle` is given; empty means the
    /// upstream GitHub releases. `{tag}` and `{file}` are filled in (a local mirror works).
    pub release_url: String,
    /// How long one chart's `helm-install-<name>` Job may take (seconds). helm-controller
    /// pulls the klipper-helm image first, and a chart's own hooks pull theirs.
    pub chart_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Longhorn {
    pub namespace: String,
    /// Replicas per volume (1 on a single node).
    pub replica_count: u32,
    /// Secret in the Longhorn namespace with the backup target's credentials (S3/CIFS);
    /// empty for NFS.
    pub backup_credential_secret: String,
    /// How often Longhorn polls the backup target, in seconds.
    pub backup_poll_interval_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CronJobs {
    pub unseal_schedule: String,
    /// Image with sh, curl, sed, tr and grep.
    pub unseal_image: String,
    pub recovery_schedule: String,
    /// Image with sh, curl and kubectl.
    pub recovery_image: String,
    pub successful_jobs_history_limit: i32,
    pub failed_jobs_history_limit: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Restore {
    /// How many volumes Longhorn restores at once.
    pub concurrency: usize,
    /// A last backup older than this is flagged in the data-loss table (hours).
    pub max_backup_age_hours: u64,
    /// How long Longhorn's manager may take to come up and make BackupTarget `default`,
    /// after its chart's install Job completed (seconds).
    pub backup_target_timeout_secs: u64,
    /// How long the backup target may take to list every backed-up volume and its newest
    /// backup as Completed, once asked to sync (seconds).
    pub discovery_timeout_secs: u64,
    /// Budget of one volume's restore: this base plus `restore_secs_per_gib` per GiB of the
    /// volume's size (seconds).
    pub restore_base_secs: u64,
    pub restore_secs_per_gib: u64,
    /// How long a recreated PVC may take to bind to its PV (seconds).
    pub bind_timeout_secs: u64,
}

// The defaults are sized for a fresh node behind a home uplink, not for the lab:
// - backup target: the manager's pod starts only after its images are pulled; with the
//   instance-manager, engine and CSI images that is about 1.5 GB, ~10 minutes at 20 Mbit/s,
//   so 20 minutes;
// - discovery: a sync request is answered within a minute or two (one NFS call per
//   BackupVolume and per Backup), but if it is missed Longhorn's own poll comes every
//   `[longhorn] backup_poll_interval_secs` (300 s): 15 minutes covers two polls;
// - a restore: Longhorn documents no bound; 10 minutes to start (attach, engine) plus
//   2 minutes per GiB (~8.5 MB/s, a NAS on a busy gigabit LAN with headroom);
// - binding: kube-controller-manager binds a pre-bound PVC within seconds: 5 minutes.
impl Default for Restore {
    fn default() -> Self {
        Restore {
            concurrency: 4,
            max_backup_age_hours: 26,
            backup_target_timeout_secs: 1200,
            discovery_timeout_secs: 900,
            restore_base_secs: 600,
            restore_secs_per_gib: 120,
            bind_timeout_secs: 300,
        }
    }
}

/// One key of one Secret, supplied at restore time. The value is never in rebox.toml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BootstrapSecret {
    /// Name of the offline backup's extra secret holding the value (else asked for).
    pub source: String,
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// The key inside the Secret.
    pub key: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_name: "homelab".into(),
            server: Server::default(),
            requirements: Requirements::default(),
            nas: Nas::default(),
            vault: Vault::default(),
            eso: Eso::default(),
            argocd: ArgoCd::default(),
            k3s: K3s::default(),
            longhorn: Longhorn::default(),
            cronjobs: CronJobs::default(),
            restore: Restore::default(),
            bootstrap_secrets: Vec::new(),
        }
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            host: String::new(),
            port: None,
            user: None,
            identity_files: Vec::new(),
            known_hosts: None,
            connect_timeout_secs: 15,
            keepalive_secs: 15,
        }
    }
}

impl Default for Requirements {
    fn default() -> Self {
        Requirements {
            os_id: "ubuntu".into(),
            os_version: "26.04".into(),
            architectures: vec!["x86_64".into(), "aarch64".into()],
            min_cpus: 2,
            min_memory_mib: 3800,
            min_disk_gib: 40,
        }
    }
}

impl Default for Nas {
    fn default() -> Self {
        Nas {
            backup_target: "nfs://nas.lan:/volume1/longhorn-backups".into(),
        }
    }
}

impl Default for K3s {
    fn default() -> Self {
        K3s {
            node_name: String::new(),
            tls_san: Vec::new(),
            disable: Vec::new(),
            release_url: String::new(),
            // Longhorn's chart on a fresh node behind a home uplink: its images (~1.5 GB) at
            // 20 Mbit/s take ~10 minutes; 30 minutes for one chart.
            chart_timeout_secs: 1800,
        }
    }
}

impl Default for Vault {
    fn default() -> Self {
        Vault {
            namespace: "security".into(),
            pod: "vault-0".into(),
            service: "vault".into(),
            port: 8200,
            pvc: "vault-data-lh".into(),
            unseal_secret: "vault-unseal-key".into(),
            unseal_secret_key: "key".into(),
            unseal_cronjob: "vault-auto-unseal".into(),
            pvc_size: "10Gi".into(),
            pvc_storage_class: "longhorn".into(),
            key_shares: 1,
            key_threshold: 1,
            // Vault's image (~150 MB) at 20 Mbit/s is a minute; a fresh Longhorn volume's
            // first attach, a few more: 15 minutes.
            start_timeout_secs: 900,
        }
    }
}

impl Default for Eso {
    fn default() -> Self {
        Eso {
            namespace: "security".into(),
            store: "k8s-secrets".into(),
            deployments: vec![
                "external-secrets".into(),
                "external-secrets-webhook".into(),
                "external-secrets-cert-controller".into(),
            ],
            recovery_cronjob: "eso-recovery".into(),
            vault_kv_path: "secret".into(),
            vault_kv_version: "v2".into(),
            vault_auth_mount: "kubernetes".into(),
            vault_role: "external-secrets".into(),
            service_account: "external-secrets".into(),
        }
    }
}

impl Default for ArgoCd {
    fn default() -> Self {
        ArgoCd {
            namespace: "argocd".into(),
            repo_url: String::new(),
            path: "clusters/homelab".into(),
            revision: "HEAD".into(),
            app_name: "root".into(),
            project: "default".into(),
            repo_secret: "gitops-repo".into(),
            repo_auth: RepoAuth::None,
            repo_username: String::new(),
            repo_credential: "argocd-repo-credential".into(),
        }
    }
}

impl Default for Longhorn {
    fn default() -> Self {
        Longhorn {
            namespace: "longhorn-system".into(),
            replica_count: 1,
            backup_credential_secret: String::new(),
            backup_poll_interval_secs: 300,
        }
    }
}

impl Default for CronJobs {
    fn default() -> Self {
        CronJobs {
            unseal_schedule: "* * * * *".into(),
            unseal_image: "docker.io/curlimages/curl:8.11.1".into(),
            recovery_schedule: "*/2 * * * *".into(),
            recovery_image: "docker.io/alpine/k8s:1.35.0".into(),
            successful_jobs_history_limit: 1,
            failed_jobs_history_limit: 3,
        }
    }
}

impl Config {
    /// Parses a config file's text. The error names the line, column and field.
    pub fn parse(text: &str, origin: &Path) -> Result<Config> {
        toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid rebox config:\n{}\nFix the line above (`rebox init --defaults -o example.toml` writes a commented example).",
                origin.display(),
                e.to_string().trim_end()
            )
        })
    }

    /// Loads the config: the explicit file (which must exist), else ./rebox.toml, else
    /// ~/.config/rebox/rebox.toml, else the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
        let candidates: Vec<PathBuf> = match explicit {
            Some(p) => {
                if !p.exists() {
                    anyhow::bail!(
                        "config file {} does not exist (create one with `rebox init -o {}`)",
                        p.display(),
                        p.display()
                    );
                }
                vec![p.to_path_buf()]
            }
            None => {
                let mut c = vec![PathBuf::from(DEFAULT_FILE)];
                if let Some(dir) = dirs::config_dir() {
                    c.push(dir.join("rebox").join(DEFAULT_FILE));
                }
                c
            }
        };
        for path in candidates {
            if path.exists() {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                let config = Config::parse(&text, &path)?;
                let from_cwd = explicit.is_none() && path == Path::new(DEFAULT_FILE);
                for warning in provenance_warnings(&path, from_cwd) {
                    eprintln!("warning: {warning}");
                }
                return Ok((config, Some(path)));
            }
        }
        Ok((Config::default(), None))
    }
}

/// What the operator should know about where the config came from: the file decides which
/// server gets the unseal key and where its backup goes, so one picked up silently from the
/// working directory, or one that someone else can edit, is said out loud.
pub fn provenance_warnings(path: &Path, from_cwd: bool) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    if from_cwd {
        out.push(format!(
            "using {} from the working directory ({}); pass --config FILE to choose another",
            path.display(),
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        ));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        let me = rustix::process::getuid().as_raw();
        if meta.uid() != me && meta.uid() != 0 {
            out.push(format!(
                "{} belongs to another user (uid {}): whoever edits it chooses the server and the backup's destination",
                path.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            out.push(format!(
                "{} can be written by others (mode {:o}): `chmod go-w {}`",
                path.display(),
                meta.mode() & 0o777,
                path.display()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_the_working_directory_or_writable_by_others_is_said() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rebox.toml");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(provenance_warnings(&path, false).is_empty());
        let w = provenance_warnings(&path, true);
        assert!(w.len() == 1 && w[0].contains("working directory"), "{w:?}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let w = provenance_warnings(&path, false);
        assert!(w.len() == 1 && w[0].contains("chmod go-w"), "{w:?}");
    }

    #[test]
    fn empty_file_gives_homelab_defaults() {
        let c = Config::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.vault.pvc, "vault-data-lh");
        assert_eq!(c.vault.namespace, "security");
        assert_eq!(c.eso.store, "k8s-secrets");
        assert_eq!(c.eso.deployments.len(), 3);
    }

    #[test]
    fn misspelled_field_names_line_and_field() {
        let text = "cluster_name = \"x\"\n\n[server]\nhots = \"a\"\n";
        let err = Config::parse(text, Path::new("r.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("hots"), "{err}");
        assert!(err.contains("r.toml"), "{err}");
    }

    #[test]
    fn wrong_type_names_line_and_field() {
        let text = "[server]\nhost = \"h\"\nport = \"twenty-two\"\n";
        let err = Config::parse(text, Path::new("r.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("port"), "{err}");
    }
}
