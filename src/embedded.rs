//! Files compiled into the binary from `embedded/` (templates, manifests, install steps).

use anyhow::{Context, Result};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "embedded/"]
struct Files;

/// The text of an embedded file.
pub fn text(path: &str) -> Result<String> {
    let file = Files::get(path).with_context(|| format!("embedded file {path} is missing"))?;
    String::from_utf8(file.data.into_owned())
        .with_context(|| format!("embedded {path} is not UTF-8"))
}
