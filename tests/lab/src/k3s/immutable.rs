//! Fields that cannot change after creation: updates touching them are 422 Invalid.
//!
//! Contract followed: kube-apiserver's `ValidateUpdate` rules for the kinds rebox writes:
//! Deployment/ReplicaSet/DaemonSet `spec.selector`; StatefulSet spec fields other than
//! replicas, ordinals, template, updateStrategy, persistentVolumeClaimRetentionPolicy and
//! minReadySeconds; Job `spec.selector` and `spec.template`; PersistentVolumeClaim spec other
//! than `resources.requests`, `volumeAttributesClassName` and a first `volumeName`;
//! PersistentVolume volume source; Secret/ConfigMap data once `immutable: true`, Secret
//! `type`; Service `spec.clusterIP`; StorageClass provisioner/parameters/reclaimPolicy/
//! volumeBindingMode; CRD `spec.scope`.
//! Left out: every other update rule (pod spec mutability, ...).

use serde_json::Value;

use super::registry::ResourceType;

type Cause = (String, String, &'static str);

fn immutable(field: &str, new: &Value, out: &mut Vec<Cause>) {
    out.push((
        field.into(),
        format!("{field}: Invalid value: {}: field is immutable", short(new)),
        "FieldValueInvalid",
    ));
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}...", &s[..120])
    } else {
        s
    }
}

fn strip(v: &Value, keys: &[&str]) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        for k in keys {
            m.remove(*k);
        }
    }
    v
}

pub fn check(rt: &ResourceType, old: &Value, new: &Value) -> Vec<Cause> {
    let mut out = vec![];
    let (os, ns) = (&old["spec"], &new["spec"]);
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") if os["selector"] != ns["selector"] => {
            immutable("spec.selector", &ns["selector"], &mut out);
        }
        ("apps", "StatefulSet") => {
            let allowed = [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
                "revisionHistoryLimit",
            ];
            if strip(os, &allowed) != strip(ns, &allowed) {
                out.push(("spec".into(), "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".into(), "FieldValueForbidden"));
            }
        }
        ("batch", "Job") => {
            if os["selector"] != ns["selector"] {
                immutable("spec.selector", &ns["selector"], &mut out);
            }
            if os["template"] != ns["template"] {
                immutable("spec.template", &ns["template"], &mut out);
            }
        }
        ("", "PersistentVolumeClaim") => {
            let mut o = strip(os, &["resources", "volumeAttributesClassName"]);
            let mut n = strip(ns, &["resources", "volumeAttributesClassName"]);
            if o["volumeName"].is_null() {
                o = strip(&o, &["volumeName"]);
                n = strip(&n, &["volumeName"]);
            }
            if o != n {
                out.push(("spec".into(), "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims".into(), "FieldValueForbidden"));
            }
        }
        ("", "PersistentVolume") => {
            let mutable = [
                "capacity",
                "accessModes",
                "claimRef",
                "persistentVolumeReclaimPolicy",
                "storageClassName",
                "mountOptions",
                "nodeAffinity",
                "volumeMode",
                "volumeAttributesClassName",
            ];
            if strip(os, &mutable) != strip(ns, &mutable) {
                out.push(("spec.persistentvolumesource".into(), "spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation".into(), "FieldValueForbidden"));
            }
        }
        ("", "Secret" | "ConfigMap") => {
            if old["immutable"] == Value::Bool(true) {
                for f in ["data", "binaryData"] {
                    if old[f] != new[f] {
                        out.push((
                            f.into(),
                            format!("{f}: Forbidden: field is immutable when `immutable` is set"),
                            "FieldValueForbidden",
                        ));
                    }
                }
                if new["immutable"] != Value::Bool(true) {
                    out.push((
                        "immutable".into(),
                        "immutable: Forbidden: field is immutable when `immutable` is set".into(),
                        "FieldValueForbidden",
                    ));
                }
            }
            if rt.kind == "Secret" && old["type"] != new["type"] {
                immutable("type", &new["type"], &mut out);
            }
        }
        ("", "Service") => {
            let (o, n) = (&os["clusterIP"], &ns["clusterIP"]);
            if o.is_string() && o != n && !(n.is_null() || n == "") {
                out.push((
                    "spec.clusterIPs[0]".into(),
                    format!(
                        "spec.clusterIPs[0]: Invalid value: {}: may not change once set",
                        short(n)
                    ),
                    "FieldValueInvalid",
                ));
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            for f in [
                "provisioner",
                "parameters",
                "reclaimPolicy",
                "volumeBindingMode",
            ] {
                if old[f] != new[f] {
                    out.push((
                        f.into(),
                        format!("{f}: Forbidden: updates to {f} are forbidden."),
                        "FieldValueForbidden",
                    ));
                }
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") if os["scope"] != ns["scope"] => {
            immutable("spec.scope", &ns["scope"], &mut out);
        }
        _ => {}
    }
    out
}
