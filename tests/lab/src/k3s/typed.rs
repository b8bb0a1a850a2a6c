//! Built-in kinds checked against k8s-openapi's structs (Kubernetes 1.35): a body must
//! deserialize into the kind's struct; what does not survive the round trip is an unknown
//! field (reported with the API server's path form `spec.template.spec.containers[0].foo`).
//!
//! Contract followed: kube-apiserver's decoding of typed objects (type errors are 400
//! BadRequest "... cannot be handled as a <Kind>: ..."; unknown fields are dropped, warned
//! about, or refused under `fieldValidation=Strict`).
//! Left out: duplicate-field detection, Go's exact `json: cannot unmarshal` wording.

use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, coordination::v1 as coord};
use k8s_openapi::api::{core::v1 as core, rbac::v1 as rbac, storage::v1 as storage};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

fn round_trip<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&t).map_err(|e| e.to_string())
}

/// Decodes `obj` as the built-in `kind` of `group`: Ok((obj without unknown fields, their paths)).
/// Kinds lab-k3s does not type-check come back unchanged.
pub fn check(group: &str, kind: &str, obj: &Value) -> Result<(Value, Vec<String>), String> {
    let typed = match (group, kind) {
        ("", "Namespace") => round_trip::<core::Namespace>(obj),
        ("", "Secret") => round_trip::<core::Secret>(obj),
        ("", "ConfigMap") => round_trip::<core::ConfigMap>(obj),
        ("", "ServiceAccount") => round_trip::<core::ServiceAccount>(obj),
        ("", "Service") => round_trip::<core::Service>(obj),
        ("", "Pod") => round_trip::<core::Pod>(obj),
        ("", "PersistentVolume") => round_trip::<core::PersistentVolume>(obj),
        ("", "PersistentVolumeClaim") => round_trip::<core::PersistentVolumeClaim>(obj),
        ("", "Node") => round_trip::<core::Node>(obj),
        ("", "Event") => round_trip::<core::Event>(obj),
        ("apps", "Deployment") => round_trip::<apps::Deployment>(obj),
        ("apps", "StatefulSet") => round_trip::<apps::StatefulSet>(obj),
        ("apps", "DaemonSet") => round_trip::<apps::DaemonSet>(obj),
        ("apps", "ReplicaSet") => round_trip::<apps::ReplicaSet>(obj),
        ("batch", "Job") => round_trip::<batch::Job>(obj),
        ("batch", "CronJob") => round_trip::<batch::CronJob>(obj),
        ("rbac.authorization.k8s.io", "Role") => round_trip::<rbac::Role>(obj),
        ("rbac.authorization.k8s.io", "RoleBinding") => round_trip::<rbac::RoleBinding>(obj),
        ("rbac.authorization.k8s.io", "ClusterRole") => round_trip::<rbac::ClusterRole>(obj),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            round_trip::<rbac::ClusterRoleBinding>(obj)
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            round_trip::<apiext::CustomResourceDefinition>(obj)
        }
        ("storage.k8s.io", "StorageClass") => round_trip::<storage::StorageClass>(obj),
        ("coordination.k8s.io", "Lease") => round_trip::<coord::Lease>(obj),
        _ => return Ok((obj.clone(), vec![])),
    }?;
    let mut unknown = vec![];
    diff(obj, &typed, "", &mut unknown);
    Ok((keep_known(obj, &typed), unknown))
}

/// ObjectMeta of a custom resource: Ok(unknown fields under `metadata`).
pub fn check_meta(meta: &Value) -> Result<(Value, Vec<String>), String> {
    let typed = round_trip::<ObjectMeta>(meta)?;
    let mut unknown = vec![];
    diff(meta, &typed, "metadata", &mut unknown);
    Ok((keep_known(meta, &typed), unknown))
}

/// `input` without the fields the typed round trip dropped (values kept as sent).
fn keep_known(input: &Value, typed: &Value) -> Value {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => Value::Object(
            a.iter()
                .filter_map(|(k, v)| match b.get(k) {
                    Some(tv) => Some((k.clone(), keep_known(v, tv))),
                    None if v.is_null() => Some((k.clone(), v.clone())),
                    None => None,
                })
                .collect(),
        ),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            Value::Array(a.iter().zip(b).map(|(v, tv)| keep_known(v, tv)).collect())
        }
        _ => input.clone(),
    }
}

/// Paths present (and non-null) in `input` but missing from `typed`.
fn diff(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    None if !v.is_null() => out.push(p),
                    None => {}
                    Some(tv) => diff(v, tv, &p, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, tv)) in a.iter().zip(b.iter()).enumerate() {
                diff(v, tv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}
