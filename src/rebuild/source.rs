//! Where the k3s binary comes from: a bundle directory on the USB stick (the binary plus a
//! SHA256SUMS listing), checked on the laptop before anything reaches the server. A digest
//! pinned in artifacts.toml wins over the listing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::manifests::{sha256_in_listing, Artifacts, BUNDLE_SHA256SUMS};
use crate::remote::sha256_file;

/// A k3s binary on the laptop whose sha256 matched the expected digest.
#[derive(Debug, Clone)]
pub struct K3sBinary {
    pub path: PathBuf,
    pub sha256: String,
    pub version: String,
}

/// Finds the k3s binary for `machine` (`uname -m` of the server) in `bundle` and checks it.
pub async fn from_bundle(bundle: &Path, artifacts: &Artifacts, machine: &str) -> Result<K3sBinary> {
    let release = &artifacts.k3s;
    let asset = release.asset(machine)?;
    let path = bundle.join(&asset.file);
    let sums_path = bundle.join(BUNDLE_SHA256SUMS);
    let expected = match release.pinned_sha256(machine) {
        Some(pinned) => pinned.to_ascii_lowercase(),
        None => {
            let sums = std::fs::read_to_string(&sums_path).with_context(|| {
                format!("reading {} (the bundle's checksums)", sums_path.display())
            })?;
            sha256_in_listing(&sums, &asset.file).with_context(|| {
                format!(
                    "{} lists no sha256 for {}; recreate the bundle",
                    sums_path.display(),
                    asset.file
                )
            })?
        }
    };
    let (actual, _) = sha256_file(&path).await.with_context(|| {
        format!(
            "the bundle has no k3s binary for {machine} at {}",
            path.display()
        )
    })?;
    if actual != expected {
        anyhow::bail!(
            "checksum mismatch for {}: expected sha256 {expected}, the file has {actual}\n  Nothing was sent to the server.\n  next: copy the k3s {} binary onto the stick again (or fix {})",
            path.display(),
            release.version,
            sums_path.display()
        );
    }
    Ok(K3sBinary {
        path,
        sha256: actual,
        version: release.version.clone(),
    })
}
