//! `rebox unseal [--from FILE]`: parse, open the offline backup (before the server is touched),
//! run the manual unseal ([`crate::doctor::unseal`]), print its report.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{ConnArgs, GlobalArgs, UnsealArgs};
use crate::doctor::unseal;
use crate::site::Site;

pub async fn run(global: &GlobalArgs, args: UnsealArgs) -> Result<ExitCode> {
    let (config, target, policy) = super::connection_settings(global, &ConnArgs::from(&args.conn))?;
    // The backup first: a wrong file or identity fails before the server is touched.
    let from_backup = match &args.from {
        Some(path) => {
            let (doc, how) = crate::keys::backup::open_file(path, &args.identities)?;
            let shares = doc.shares();
            tracing::info!(file = %path.display(), how, shares = shares.len(), "opened the offline backup");
            Some((shares, format!("the offline backup {}", path.display())))
        }
        None => None,
    };
    let site = Site::connect(config, target, policy).await?;
    let result = unseal::unseal(&site, from_backup).await;
    site.close().await;
    let report = result?;
    super::emit(global, &report, || format!("{}\n", report.note))?;
    Ok(ExitCode::SUCCESS)
}
