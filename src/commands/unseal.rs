//! `rebox unseal [--from FILE]`: a manual unseal through the SSH tunnel to Vault's Service,
//! with the key from an offline backup (decrypted here, on the laptop) or from the cluster's
//! Secret. Progress is shown share by share; the key is never printed or logged.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::wait::await_condition;
use kube::Api;

use crate::cli::{ConnArgs, GlobalArgs, UnsealArgs};
use crate::cluster::Cluster;
use crate::doctor::snapshot::VaultConn;
use crate::keys::SecretText;
use crate::remote::Remote;

/// How long to wait for vault-0 to turn Ready after the unseal.
const READY_DEADLINE: Duration = Duration::from_secs(60);

pub async fn run(global: &GlobalArgs, args: UnsealArgs) -> Result<ExitCode> {
    let (config, target, policy) = super::connection_settings(global, &ConnArgs::from(&args.conn))?;
    // The backup first: a wrong file or identity fails before the server is touched.
    let from_backup = match &args.from {
        Some(path) => {
            let (doc, how) = super::key::open_backup(path, &args.identities)?;
            let shares: Vec<SecretText> = doc.unseal.shares.iter().map(|s| s.key.clone()).collect();
            tracing::info!(file = %path.display(), how, shares = shares.len(), "opened the offline backup");
            Some((shares, format!("the offline backup {}", path.display())))
        }
        None => None,
    };
    let remote = Remote::connect(target, policy).await?;
    let result = unseal(global, &config, &remote, from_backup).await;
    remote.close().await;
    result
}

async fn unseal(
    global: &GlobalArgs,
    config: &crate::config::Config,
    remote: &Remote,
    from_backup: Option<(Vec<SecretText>, String)>,
) -> Result<ExitCode> {
    let v = &config.vault;
    let cluster = Cluster::connect(remote).await?;
    let vault = VaultConn::open(remote, &cluster, config)
        .await
        .context("cannot reach Vault through the SSH tunnel\n  next: `rebox doctor` checks vault-0 and its volume")?;
    let before = vault.client.seal_status().await?;
    if !before.initialized {
        bail!("Vault is not initialised: there is nothing to unseal\n  next: `rebox rebuild` initialises a fresh Vault");
    }
    let report = |sealed: bool,
                  progress: u32,
                  threshold: u32,
                  source: &str,
                  note: &str|
     -> Result<()> {
        if global.json {
            let v = serde_json::json!({"sealed": sealed, "progress": progress, "threshold": threshold,
                                       "key_source": source, "note": note});
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!("{note}");
        }
        Ok(())
    };
    if !before.sealed {
        report(
            false,
            0,
            before.threshold,
            "",
            "Vault is already unsealed; nothing to do",
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let (shares, source) = match from_backup {
        Some(s) => s,
        None => {
            let raw = cluster
                .secret_value(&v.namespace, &v.unseal_secret, &v.unseal_secret_key)
                .await?
                .with_context(|| format!(
                    "Secret {}/{} (key `{}`) does not exist, so it cannot give the key\n  next: `rebox unseal --from vault-key.age -i IDENTITY` with the offline backup",
                    v.namespace, v.unseal_secret, v.unseal_secret_key
                ))?;
            let text = std::str::from_utf8(&raw).map_err(|_| {
                anyhow::anyhow!(
                    "Secret {}/{} key `{}` is not text",
                    v.namespace,
                    v.unseal_secret,
                    v.unseal_secret_key
                )
            })?;
            let shares = crate::keys::source::parse_shares(text).with_context(|| {
                format!(
                    "Secret {}/{} key `{}` does not hold unseal key shares",
                    v.namespace, v.unseal_secret, v.unseal_secret_key
                )
            })?;
            (
                shares,
                format!("Secret {}/{}", v.namespace, v.unseal_secret),
            )
        }
    };
    if (shares.len() as u32) < before.threshold {
        bail!(
            "{source} holds {} share(s) but Vault needs {}; nothing was submitted",
            shares.len(),
            before.threshold
        );
    }
    eprintln!(
        "unsealing Vault ({} of {} share(s) needed) with the key from {source}",
        before.threshold, before.shares
    );
    let after = vault
        .client
        .unseal_all(&shares, |p| {
            eprintln!("  {}", crate::doctor::progress_line(&p))
        })
        .await
        .with_context(|| format!("Vault refused the key from {source}"))?;
    if after.sealed {
        bail!("Vault is still sealed after every share from {source} was given");
    }
    // vault-0's readiness probe is `vault status`: it turns Ready once Vault is unsealed.
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &v.namespace);
    let ready = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let note =
        match tokio::time::timeout(READY_DEADLINE, await_condition(pods, &v.pod, ready)).await {
            Ok(Ok(_)) => format!(
                "Vault unsealed with the key from {source}; {} is Ready",
                v.pod
            ),
            _ => format!(
            "Vault unsealed with the key from {source}; {} is not Ready yet (see `rebox status`)",
            v.pod
        ),
        };
    report(false, after.threshold, after.threshold, &source, &note)?;
    Ok(ExitCode::SUCCESS)
}
