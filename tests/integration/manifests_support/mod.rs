//! Strict checks for rendered manifests, shared by the `manifests_*` tests: core kinds
//! through k8s-openapi's typed structs with unknown fields refused (a round trip must keep
//! every field), custom resources against the openAPIV3Schema of the real upstream CRDs in
//! `../shared/crds`, with `additionalProperties: false` injected wherever the structural
//! schema does not preserve unknown fields (what the API server's pruning/strict field
//! validation would reject).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// `../shared/crds` beside the clone, or `None` after a loud SKIPPED line on stderr.
pub fn crds_dir() -> Option<PathBuf> {
    let dir = // Read at run time: a test binary built in another clone (shared CARGO_TARGET_DIR) must
    // still look beside this one.
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo test")).join("../shared/crds");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: ../shared/crds not found — upstream CRD cross-check not run (CI has it beside the clone)"
        );
        None
    }
}

/// Field paths in `original` that a typed round trip lost or changed: unknown fields.
pub fn lost_fields(original: &Value, round_trip: &Value, path: &str) -> Vec<String> {
    match (original, round_trip) {
        (Value::Object(a), Value::Object(b)) => a
            .iter()
            .flat_map(|(k, v)| match b.get(k) {
                Some(w) => lost_fields(v, w, &format!("{path}.{k}")),
                None => vec![format!("{path}.{k}: unknown field")],
            })
            .collect(),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .flat_map(|(i, (v, w))| lost_fields(v, w, &format!("{path}[{i}]")))
            .collect(),
        (a, b) if a == b => Vec::new(),
        (a, b) => vec![format!("{path}: {a} became {b}")],
    }
}

fn typed_round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let lost = lost_fields(object, &back, "");
    if lost.is_empty() {
        Ok(())
    } else {
        Err(lost.join("; "))
    }
}

/// Whether `apiVersion`/`kind` is a core kind with a typed check here.
pub fn is_core(object: &Value) -> bool {
    core_check(object).is_some()
}

fn core_check(object: &Value) -> Option<Result<(), String>> {
    use k8s_openapi::api::{batch, core, rbac};
    let api = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    Some(match (api, kind) {
        ("v1", "Namespace") => typed_round_trip::<core::v1::Namespace>(object),
        ("v1", "ServiceAccount") => typed_round_trip::<core::v1::ServiceAccount>(object),
        ("v1", "Secret") => typed_round_trip::<core::v1::Secret>(object),
        ("v1", "ConfigMap") => typed_round_trip::<core::v1::ConfigMap>(object),
        ("v1", "PersistentVolumeClaim") => {
            typed_round_trip::<core::v1::PersistentVolumeClaim>(object)
        }
        ("batch/v1", "CronJob") => typed_round_trip::<batch::v1::CronJob>(object),
        ("rbac.authorization.k8s.io/v1", "Role") => typed_round_trip::<rbac::v1::Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            typed_round_trip::<rbac::v1::RoleBinding>(object)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            typed_round_trip::<rbac::v1::ClusterRole>(object)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            typed_round_trip::<rbac::v1::ClusterRoleBinding>(object)
        }
        _ => return None,
    })
}

/// Typed strict check of a core object; an error for kinds this file has no struct for.
pub fn check_core(object: &Value) -> Result<(), String> {
    core_check(object).unwrap_or_else(|| {
        Err(format!(
            "no typed check for {} {} (add it to tests/manifests_support)",
            object["apiVersion"], object["kind"]
        ))
    })
}

/// The metadata of any object, through the typed ObjectMeta (unknown fields refused).
pub fn check_metadata(object: &Value) -> Result<(), String> {
    typed_round_trip::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(
        &object["metadata"],
    )
}

/// Makes a structural schema strict: every object schema with `properties` that neither
/// preserves unknown fields nor declares `additionalProperties` refuses unknown fields.
/// Combinators (allOf/anyOf/oneOf/not) are left alone: their branches only constrain fields
/// the parent declares.
pub fn strict(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if map.contains_key("properties") && !preserves && !map.contains_key("additionalProperties") {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    if let Some(Value::Object(props)) = map.get_mut("properties") {
        for sub in props.values_mut() {
            strict(sub);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = map.get_mut(key) {
            strict(sub);
        }
    }
}

/// The served versions of every CRD in a directory, as strict validators.
pub struct CrdSchemas {
    validators: HashMap<(String, String), jsonschema::Validator>,
}

impl CrdSchemas {
    pub fn load(dir: &std::path::Path) -> CrdSchemas {
        let mut validators = HashMap::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        entries.sort();
        for path in entries {
            let text = std::fs::read_to_string(&path).unwrap();
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for crd in docs {
                if crd["kind"] != "CustomResourceDefinition" {
                    continue;
                }
                let group = crd["spec"]["group"].as_str().unwrap();
                let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
                for version in crd["spec"]["versions"].as_array().unwrap() {
                    if version["served"] != true {
                        continue;
                    }
                    let name = version["name"].as_str().unwrap();
                    let mut schema = version["schema"]["openAPIV3Schema"].clone();
                    strict(&mut schema);
                    let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| {
                        panic!("{}: schema of {group}/{name} {kind}: {e}", path.display())
                    });
                    validators.insert((format!("{group}/{name}"), kind.to_string()), validator);
                }
            }
        }
        CrdSchemas { validators }
    }

    /// Whether a served CRD version covers this object's apiVersion and kind.
    pub fn covers(&self, object: &Value) -> bool {
        self.validators.contains_key(&key(object))
    }

    /// Validates a custom resource; the errors name the instance path.
    pub fn validate(&self, object: &Value) -> Result<(), String> {
        let Some(validator) = self.validators.get(&key(object)) else {
            return Err(format!(
                "no served CRD for {} {}",
                object["apiVersion"], object["kind"]
            ));
        };
        let errors: Vec<String> = validator
            .iter_errors(object)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            check_metadata(object)
        } else {
            Err(errors.join("; "))
        }
    }
}

fn key(object: &Value) -> (String, String) {
    (
        object["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        object["kind"].as_str().unwrap_or_default().to_string(),
    )
}
