//! The pinned versions in `embedded/artifacts.toml`: the k3s release (asset names, URLs and
//! where its sha256 comes from) and the Helm charts the HelmChart objects install.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Everything `embedded/artifacts.toml` pins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Artifacts {
    pub k3s: K3sRelease,
    /// Charts by key (`longhorn`, `vault`, `external-secrets`, `argo-cd`).
    pub charts: BTreeMap<String, Chart>,
}

/// The k3s release rebox installs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct K3sRelease {
    /// Release tag, e.g. `v1.35.0+k3s1`.
    pub version: String,
    /// URL pattern with `{tag}` (URL-encoded version) and `{file}`.
    pub release_url: String,
    /// Checksum file name pattern with `{arch}` (release architecture).
    pub checksums_file: String,
    /// Server architecture (`uname -m`) -> release asset.
    pub assets: BTreeMap<String, K3sAsset>,
    /// Optional pinned digests (hex) by `uname -m`; they win over the checksum file.
    #[serde(default)]
    pub sha256: BTreeMap<String, String>,
}

/// One k3s binary in the release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct K3sAsset {
    /// Release architecture name (`amd64`, `arm64`).
    pub arch: String,
    /// Asset file name (`k3s`, `k3s-arm64`).
    pub file: String,
}

/// A pinned Helm chart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Chart {
    /// Chart name in the repository.
    pub chart: String,
    pub repo: String,
    pub version: String,
}

impl Chart {
    /// The file `helm pull` writes, looked up in a bundle's `charts/` directory.
    pub fn tarball_name(&self) -> String {
        format!("{}-{}.tgz", self.chart, self.version)
    }
}

impl Artifacts {
    /// The embedded, pinned artifacts.
    pub fn embedded() -> Result<Artifacts> {
        let text = crate::embedded::text("artifacts.toml")?;
        toml::from_str(&text).context("embedded/artifacts.toml is invalid (a build defect)")
    }

    /// The chart pinned under `key`.
    pub fn chart(&self, key: &str) -> Result<&Chart> {
        self.charts
            .get(key)
            .with_context(|| format!("embedded/artifacts.toml pins no chart named {key}"))
    }
}

impl K3sRelease {
    /// The asset for a server architecture as `uname -m` prints it.
    pub fn asset(&self, machine: &str) -> Result<&K3sAsset> {
        self.assets.get(machine).with_context(|| {
            format!(
                "k3s {} has no binary for architecture {machine} (rebox knows: {})",
                self.version,
                self.assets.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The release tag as it appears in URLs (`+` encoded).
    pub fn url_tag(&self) -> String {
        self.version.replace('+', "%2B")
    }

    fn url(&self, file: &str) -> String {
        self.release_url
            .replace("{tag}", &self.url_tag())
            .replace("{file}", file)
    }

    /// Download URL of the k3s binary for `machine`.
    pub fn binary_url(&self, machine: &str) -> Result<String> {
        Ok(self.url(&self.asset(machine)?.file))
    }

    /// Name of the release's checksum file for `machine`.
    pub fn checksums_name(&self, machine: &str) -> Result<String> {
        Ok(self
            .checksums_file
            .replace("{arch}", &self.asset(machine)?.arch))
    }

    /// Download URL of the release's checksum file for `machine`.
    pub fn checksums_url(&self, machine: &str) -> Result<String> {
        Ok(self.url(&self.checksums_name(machine)?))
    }

    /// A digest pinned in artifacts.toml for `machine`, if any.
    pub fn pinned_sha256(&self, machine: &str) -> Option<&str> {
        self.sha256
            .get(machine)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// The sha256 of `file` in a `sha256sum`-style listing (`<hex>  <name>` or `<hex> *<name>`),
/// lower-cased; `None` when the file is not listed or the digest is malformed.
pub fn sha256_in_listing(listing: &str, file: &str) -> Option<String> {
    listing.lines().find_map(|line| {
        let (digest, name) = line.trim().split_once(char::is_whitespace)?;
        let name = name.trim_start();
        let name = name.strip_prefix('*').unwrap_or(name);
        let name = name.strip_prefix("./").unwrap_or(name);
        let ok = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        (name == file && ok).then(|| digest.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_artifacts_parse_and_name_the_assets() {
        let a = Artifacts::embedded().unwrap();
        assert!(a.k3s.version.starts_with("v1.35."), "{}", a.k3s.version);
        let url = a.k3s.binary_url("x86_64").unwrap();
        assert!(url.ends_with("/k3s"), "{url}");
        assert!(url.contains("%2Bk3s"), "{url}");
        assert!(a
            .k3s
            .checksums_url("aarch64")
            .unwrap()
            .ends_with("sha256sum-arm64.txt"));
        assert!(a.k3s.asset("riscv64").is_err());
        for key in ["longhorn", "vault", "external-secrets", "argo-cd"] {
            assert!(a.chart(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn listing_lookup_takes_the_exact_file() {
        let d1 = "a".repeat(64);
        let d2 = "B".repeat(64);
        let listing = format!("{d1}  k3s-arm64\n{d2}  k3s\n{d1} *e2e.tar\n");
        assert_eq!(sha256_in_listing(&listing, "k3s"), Some("b".repeat(64)));
        assert_eq!(sha256_in_listing(&listing, "k3s-arm64"), Some(d1.clone()));
        assert_eq!(sha256_in_listing(&listing, "e2e.tar"), Some(d1));
        assert_eq!(sha256_in_listing(&listing, "k3s-armhf"), None);
        assert_eq!(sha256_in_listing("xyz  k3s\n", "k3s"), None);
    }
}
