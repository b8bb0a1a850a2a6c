//! Secret values the rendered manifests need but never contain. A manifest lists them as
//! [`SecretInput`]s; at apply time [`Manifest::objects_with_secrets`] merges the values in and
//! turns every Secret's `stringData` into base64 `data` (server-side apply handles `data`
//! reliably). The rendered YAML itself stays free of secrets, safe to print and snapshot.

use anyhow::{bail, Result};
use base64::Engine;
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use super::Manifest;

/// One key of a Secret whose value is supplied at apply time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInput {
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// The key inside the Secret (e.g. `password`, `sshPrivateKey`).
    pub key: String,
    /// The offline backup's named extra secret (or the prompt) that supplies the value.
    pub source: String,
}

impl Manifest {
    /// The manifest's objects with every [`SecretInput`] filled by `lookup` and each Secret's
    /// `stringData` folded into base64 `data`. Fails, naming the source, when a value is missing.
    pub fn objects_with_secrets(
        &self,
        lookup: &dyn Fn(&SecretInput) -> Option<Zeroizing<String>>,
    ) -> Result<Vec<Value>> {
        let mut objects = self.objects.clone();
        for input in &self.secret_inputs {
            let Some(value) = lookup(input) else {
                bail!(
                    "no value for key {} of Secret {}/{}: add the extra secret {:?} to the offline backup or answer the prompt",
                    input.key,
                    input.namespace,
                    input.secret,
                    input.source
                );
            };
            let Some(target) = objects.iter_mut().find(|o| is_secret(o, input)) else {
                bail!(
                    "manifest {} has no Secret {}/{} for its secret input (a rendering defect)",
                    self.name,
                    input.namespace,
                    input.secret
                );
            };
            let string_data = target
                .as_object_mut()
                .expect("objects are maps")
                .entry("stringData")
                .or_insert_with(|| Value::Object(Default::default()));
            string_data[&input.key] = Value::String(value.to_string());
        }
        for object in &mut objects {
            if object["kind"] == "Secret" && object["apiVersion"] == "v1" {
                fold_string_data(object);
            }
        }
        Ok(objects)
    }
}

fn is_secret(object: &Value, input: &SecretInput) -> bool {
    object["apiVersion"] == "v1"
        && object["kind"] == "Secret"
        && object["metadata"]["name"] == input.secret.as_str()
        && object["metadata"]["namespace"] == input.namespace.as_str()
}

/// Moves `stringData` into `data` (base64), as the API server would on write.
fn fold_string_data(secret: &mut Value) {
    let map = secret.as_object_mut().expect("objects are maps");
    let Some(Value::Object(string_data)) = map.remove("stringData") else {
        return;
    };
    let data = map
        .entry("data")
        .or_insert_with(|| Value::Object(Default::default()));
    for (key, value) in string_data {
        let text = value.as_str().unwrap_or_default();
        data[&key] = Value::String(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// The Secret the `vault-auto-unseal` CronJob mounts (`[vault] unseal_secret`, key
/// `unseal_secret_key`): the unseal key shares, one per line, the format the CronJob's script
/// reads. Built at apply time from the offline backup; never rendered into a manifest.
pub fn unseal_key_secret(config: &crate::config::Config, shares: &[&str]) -> Value {
    let mut text = Zeroizing::new(String::new());
    for share in shares {
        text.push_str(share.trim());
        text.push('\n');
    }
    let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(text.as_bytes()));
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": config.vault.unseal_secret,
            "namespace": config.vault.namespace,
            "labels": {"app.kubernetes.io/managed-by": "rebox"},
        },
        "type": "Opaque",
        "data": { config.vault.unseal_secret_key.as_str(): encoded.as_str() },
    })
}
