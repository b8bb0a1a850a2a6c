//! What the renderer takes besides the config: chart tarballs for air-gapped runs, read from
//! a bundle directory and checked against the bundle's `SHA256SUMS` before use.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::artifacts::{sha256_in_listing, Artifacts};

/// The bundle's directory of chart tarballs (`helm pull` names: `<chart>-<version>.tgz`).
pub const BUNDLE_CHARTS_DIR: &str = "charts";
/// The bundle's checksum listing (`sha256sum` format, paths relative to the bundle).
pub const BUNDLE_SHA256SUMS: &str = "SHA256SUMS";

/// Optional inputs to [`super::render_all`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderInputs {
    /// Chart tarballs by chart key (`longhorn`, `vault`, …). A chart found here is sent as
    /// `chartContent` (base64) instead of being fetched from its repository.
    pub chart_tarballs: BTreeMap<String, Vec<u8>>,
}

impl RenderInputs {
    /// Charts come from their repositories (the server needs the internet).
    pub fn online() -> RenderInputs {
        RenderInputs::default()
    }

    /// Charts come from `<bundle>/charts/` when that directory exists: then every pinned chart
    /// must be there and match its line in `<bundle>/SHA256SUMS`. Without a `charts/`
    /// directory the charts come from their repositories.
    pub fn from_bundle(bundle: &Path, artifacts: &Artifacts) -> Result<RenderInputs> {
        let dir = bundle.join(BUNDLE_CHARTS_DIR);
        if !dir.is_dir() {
            return Ok(RenderInputs::online());
        }
        let sums_path = bundle.join(BUNDLE_SHA256SUMS);
        let sums = std::fs::read_to_string(&sums_path).with_context(|| {
            format!(
                "the bundle has charts but no readable {} (recreate the bundle)",
                sums_path.display()
            )
        })?;
        let mut chart_tarballs = BTreeMap::new();
        for (key, chart) in &artifacts.charts {
            let name = chart.tarball_name();
            let path = dir.join(&name);
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "chart {key} {} is missing from the bundle: expected {} (`helm pull {} --repo {} --version {}`)",
                    chart.version,
                    path.display(),
                    chart.chart,
                    chart.repo,
                    chart.version
                )
            })?;
            let listed = format!("{BUNDLE_CHARTS_DIR}/{name}");
            let Some(expected) = sha256_in_listing(&sums, &listed) else {
                bail!(
                    "{listed} is not listed in {}: refusing an unchecked chart (recreate the bundle)",
                    sums_path.display()
                );
            };
            let actual = hex::encode(Sha256::digest(&bytes));
            if actual != expected {
                bail!(
                    "{} does not match {}: sha256 {actual}, expected {expected}. The bundle is corrupt or altered; recreate it",
                    path.display(),
                    sums_path.display()
                );
            }
            chart_tarballs.insert(key.clone(), bytes);
        }
        Ok(RenderInputs { chart_tarballs })
    }
}
