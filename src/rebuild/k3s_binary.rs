//! Where the k3s binary comes from: a bundle directory on the USB stick (the binary plus a
//! SHA256SUMS listing), or a download from the k3s release (checked against the release's
//! published sha256 file) into a cache on the laptop. Either way the sha256 is checked on the
//! laptop before anything reaches the server; a digest pinned in artifacts.toml wins.

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
        anyhow::bail!(crate::next::hinted(format!("checksum mismatch for {}: expected sha256 {expected}, the file has {actual}\n  Nothing was sent to the server.", path.display()), format!("copy the k3s {} binary onto the stick again (or fix {})", release.version, sums_path.display())));
    }
    Ok(K3sBinary {
        path,
        sha256: actual,
        version: release.version.clone(),
    })
}

/// Downloads the k3s binary for `machine` from the release (or `mirror`, a URL template with
/// `{tag}` and `{file}`) into `cache_dir`, checked against the release's sha256 file. A cached
/// copy with the right sha256 is reused; nothing unchecked is ever kept.
pub async fn download(
    artifacts: &Artifacts,
    machine: &str,
    mirror: &str,
    cache_dir: &Path,
) -> Result<K3sBinary> {
    let mut release = artifacts.k3s.clone();
    if !mirror.is_empty() {
        release.release_url = mirror.to_string();
    }
    let asset = release.asset(machine)?.clone();
    crate::init_crypto();
    let http = reqwest::Client::builder()
        .user_agent(concat!("rebox/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("creating the HTTP client")?;
    let expected = match release.pinned_sha256(machine) {
        Some(pinned) => pinned.to_ascii_lowercase(),
        None => {
            let url = release.checksums_url(machine)?;
            let listing = fetch(&http, &url)
                .await?
                .text()
                .await
                .with_context(|| format!("reading {url}"))?;
            sha256_in_listing(&listing, &asset.file)
                .with_context(|| format!("{url} lists no sha256 for {}", asset.file))?
        }
    };
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    let path = cache_dir.join(format!("k3s-{}-{}", release.version, asset.arch));
    if path.exists() && sha256_file(&path).await?.0 == expected {
        return Ok(K3sBinary {
            path,
            sha256: expected,
            version: release.version.clone(),
        });
    }
    let url = release.binary_url(machine)?;
    let mut response = fetch(&http, &url).await?;
    let part = path.with_extension("part");
    let mut file = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("creating {}", part.display()))?;
    let bar = crate::ui::bytes_bar(
        response.content_length().unwrap_or(0),
        &format!("downloading k3s {}", release.version),
    );
    use tokio::io::AsyncWriteExt;
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("downloading {url}"))?
    {
        file.write_all(&chunk).await?;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all().await?;
    bar.finish_and_clear();
    let (actual, _) = sha256_file(&part).await?;
    if actual != expected {
        let _ = std::fs::remove_file(&part);
        anyhow::bail!(crate::next::hinted(format!("checksum mismatch for {url}: expected sha256 {expected}, downloaded {actual}; the download was deleted\n  Nothing was sent to the server."), "retry; if it persists, use a bundle from a trusted copy (--bundle DIR)"));
    }
    std::fs::rename(&part, &path)?;
    Ok(K3sBinary {
        path,
        sha256: actual,
        version: release.version.clone(),
    })
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<reqwest::Response> {
    let response = http.get(url).send().await.with_context(|| {
        crate::next::hinted(
            format!("cannot download {url}"),
            "check the laptop's network, or bring the binary on the stick (--bundle DIR)",
        )
    })?;
    if !response.status().is_success() {
        anyhow::bail!(crate::next::hinted(
            format!("{url} answered {}", response.status()),
            "check the k3s version pinned in this rebox, or use --bundle DIR"
        ));
    }
    Ok(response)
}
