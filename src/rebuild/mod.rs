//! `rebox rebuild`: the node-destruction rebuild as a list of phases (see design.md, "Order of
//! a rebuild"). This module holds the flow's context and the list; each phase group lives in
//! its own file.

mod addons;
pub mod from_nas;
pub mod gitops;
mod host;
mod k3s;
pub mod k3s_binary;
pub mod prepare;
mod vault;
mod vault_for_eso;

use anyhow::Result;

use crate::flow::Phase;
use crate::keys::crypt::NamedRecipient;
use crate::manifests::{Artifacts, Group, RenderInputs};
use crate::secret::SecretText;
use crate::site::Site;
use k3s_binary::K3sBinary;

/// Where the new unseal key's offline backup goes, and how to prove it decrypts.
pub struct KeyBackup {
    pub path: std::path::PathBuf,
    /// Recipients as given (`age1…`, SSH public key lines) and recipients files; parsed when
    /// needed, like the identity files (age's recipient and identity objects are not `Sync`).
    pub recipients: Vec<String>,
    pub recipients_files: Vec<std::path::PathBuf>,
    pub identity_files: Vec<std::path::PathBuf>,
}

impl KeyBackup {
    pub fn recipients(&self) -> Result<Vec<NamedRecipient>> {
        crate::keys::crypt::recipients(&self.recipients, &self.recipients_files)
    }

    pub fn identities(&self) -> Result<Vec<Box<dyn age::Identity>>> {
        crate::keys::crypt::identities(&self.identity_files)
    }

    /// Writes `doc` to the backup's path, encrypted to the recipients, and proves the
    /// identities decrypt it (age's objects are not `Send`: call it between awaits).
    pub fn write_verified(&self, doc: &crate::keys::BackupDocument) -> Result<()> {
        crate::keys::backup::write_verified(
            doc,
            &self.recipients()?,
            &self.identities()?,
            &self.path,
        )
    }

    /// Everything readable and parseable now, not after Vault is initialised.
    pub fn check(&self) -> Result<()> {
        if self.recipients()?.is_empty() || self.identities()?.is_empty() {
            anyhow::bail!(crate::next::hinted(
                "--key-out needs --key-recipient (or --key-recipients-file) and --key-identity",
                "pass both, so the backup can be proven to decrypt before Vault is initialised"
            ));
        }
        Ok(())
    }
}

/// The restore's inputs and results.
pub struct RestoreState {
    pub table: crate::restore::table::Table,
    pub outcomes: Vec<crate::restore::longhorn::Outcome>,
}

/// A yes/no question put to the operator.
pub type Confirm = Box<dyn Fn(&str) -> Result<bool> + Send + Sync>;

/// Everything the rebuild phases share.
pub struct Ctx {
    /// The server, its cluster and Vault, over one SSH connection (and the config).
    pub site: Site,
    pub artifacts: Artifacts,
    pub inputs: RenderInputs,
    /// The checked k3s binary on the laptop.
    pub k3s: K3sBinary,
    /// Overwrite an existing k3s install that rebox did not make.
    pub force: bool,
    /// The offline backup settings; `None` when not given (then the Vault phases refuse).
    pub key_backup: Option<KeyBackup>,
    /// The unseal key shares, held in memory from Vault's init answer or the decrypted backup.
    pub unseal_shares: Option<Vec<SecretText>>,
    /// The root token of Vault's init answer (with its entry on the server's record), in
    /// memory only until the ESO setup right after the unseal revokes it; a resumed run
    /// makes a short-lived one from the key instead.
    pub init_root_token: Option<(crate::site::root_token::Pending, SecretText)>,
    /// Asks the operator (a yes/no question); answers yes under `--yes`.
    pub confirm: Confirm,
    /// On `--restore-from-nas`: the data-loss table and what each volume's restore did.
    pub restore: Option<RestoreState>,
    /// Secret values by source name (the offline backup's extra secrets, or prompts).
    pub secret_values: std::collections::BTreeMap<String, SecretText>,
    /// The embedded manifests rendered from the config, once per run.
    manifests: std::sync::OnceLock<Vec<crate::manifests::Manifest>>,
}

impl Ctx {
    pub fn new(
        site: Site,
        artifacts: Artifacts,
        inputs: RenderInputs,
        k3s: K3sBinary,
        force: bool,
    ) -> Ctx {
        Ctx {
            site,
            artifacts,
            inputs,
            k3s,
            force,
            key_backup: None,
            unseal_shares: None,
            init_root_token: None,
            confirm: Box::new(|_| Ok(false)),
            restore: None,
            secret_values: Default::default(),
            manifests: std::sync::OnceLock::new(),
        }
    }

    /// Every embedded manifest rendered from the config (rendered on first use, then kept).
    pub fn manifests(&self) -> Result<&[crate::manifests::Manifest]> {
        if let Some(m) = self.manifests.get() {
            return Ok(m);
        }
        let rendered = crate::manifests::render_all(&self.site.config, &self.inputs)?;
        Ok(self.manifests.get_or_init(|| rendered))
    }

    pub fn key_backup(&self) -> Result<&KeyBackup> {
        self.key_backup.as_ref().ok_or_else(|| {
            anyhow::anyhow!(crate::next::hinted("no offline backup given for the new Vault unseal key", "pass --key-out FILE (on the USB stick), --key-recipient age1… (or --key-recipients-file) and --key-identity FILE so rebox can prove the backup decrypts"))
        })
    }

    /// The unseal shares: from memory, else from the decrypted offline backup.
    pub fn shares_from_backup(&mut self) -> Result<Vec<SecretText>> {
        if let Some(shares) = &self.unseal_shares {
            return Ok(shares.clone());
        }
        let doc = vault::open_backup(self)?;
        let shares = doc.shares();
        self.unseal_shares = Some(shares.clone());
        Ok(shares)
    }

    /// The node name k3s registers: the configured one, else the server's hostname.
    pub async fn node_name(&self) -> Result<String> {
        if !self.site.config.k3s.node_name.is_empty() {
            return Ok(self.site.config.k3s.node_name.clone());
        }
        // The node is named after the host name lower-cased, as the kubelet does
        // (k8s.io/component-helpers node/util GetHostname): "Homelab" is node "homelab".
        Ok(self
            .site
            .remote
            .exec("hostname")
            .await?
            .stdout_str()
            .trim()
            .to_ascii_lowercase())
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
        Box::new(vault::Init),
        Box::new(vault::KeySecret),
        Box::new(vault::Unseal),
        Box::new(vault_for_eso::ReadyForEso),
        Box::new(addons::Apply {
            group: Group::ExternalSecrets,
            title: "Install External Secrets Operator",
        }),
        Box::new(addons::Apply {
            group: Group::SecretStore,
            title: "Create the ClusterSecretStore",
        }),
        Box::new(gitops::StoreReady),
        Box::new(addons::Apply {
            group: Group::ArgoCd,
            title: "Install Argo CD",
        }),
        Box::new(addons::Apply {
            group: Group::GitOps,
            title: "Create the repository Secret and the root Application",
        }),
        Box::new(gitops::AppsSynced),
        Box::new(addons::Apply {
            group: Group::CronJobs,
            title: "Install the CronJobs (Vault auto-unseal, ESO recovery)",
        }),
    ]
}

/// The phases of `rebuild --restore-from-nas`: the fresh rebuild's, with the volumes restored
/// from the NAS before Vault is installed, Vault unsealed with the offline backup's key (never
/// initialised), and the bootstrap Secrets before GitOps.
pub fn restore_phases() -> Vec<Box<dyn Phase<Ctx>>> {
    let mut phases: Vec<Box<dyn Phase<Ctx>>> = Vec::new();
    for phase in fresh_phases() {
        match phase.id() {
            "guard" => {
                phases.push(phase);
                phases.push(Box::new(from_nas::Guard));
            }
            // The restored volume replaces the fresh PVC; Vault's key comes from the backup.
            id if id == Group::VaultStorage.name() && !Group::VaultStorage.on_restore_path() => {}
            "vault-init" | "vault-key-secret" | "vault-unseal" => {}
            "vault" => {
                phases.push(Box::new(from_nas::Volumes));
                phases.push(phase);
                phases.push(Box::new(from_nas::VaultRestored));
                // Unseal first: a wrong key fails here, before it reaches the Secret.
                phases.push(Box::new(vault::Unseal));
                phases.push(Box::new(vault::KeySecret));
                phases.push(Box::new(from_nas::BootstrapSecrets));
            }
            _ => phases.push(phase),
        }
    }
    phases
}
