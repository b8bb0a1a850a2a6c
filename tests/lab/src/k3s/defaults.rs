//! Server-side defaulting and system metadata for new and updated objects.
//!
//! Contract followed: kube-apiserver's strategies for the kinds listed: `uid`,
//! `creationTimestamp`, `generation` (bumped when anything outside metadata/status changes),
//! Secret `stringData` folded into `data` and `type: Opaque`, Namespace phase `Active` and the
//! `kubernetes.io/metadata.name` label, Job selector and controller-uid labels, CronJob and
//! workload replica defaults, Pod/PVC/PV initial phases, CRD `Established` conditions.
//! Also the timestamp format objects carry: [`now`] writes it, [`parse_time`] reads it.
//! Left out: most per-field defaults of pod templates (dnsPolicy, terminationMessagePath,
//! ...), Service cluster IP allocation beyond a simple counter, ServiceAccount tokens.

use rand::Rng;
use serde_json::{json, Value};

use super::registry::ResourceType;

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An RFC 3339 timestamp (what [`now`] writes and clients send) as UTC; None if it is not one.
pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

pub fn new_uid() -> String {
    let b: [u8; 16] = rand::thread_rng().gen();
    let mut b = b;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Five characters from the alphabet kube-apiserver uses for `generateName`.
pub fn random_suffix() -> String {
    const A: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = rand::thread_rng();
    (0..5).map(|_| A[r.gen_range(0..A.len())] as char).collect()
}

fn set_default(obj: &mut Value, ptr: &[&str], v: Value) {
    let mut cur = obj;
    for (i, k) in ptr.iter().enumerate() {
        if i == ptr.len() - 1 {
            if cur.get(*k).is_none_or(Value::is_null) {
                cur[*k] = v;
            }
            return;
        }
        if !cur[*k].is_object() {
            cur[*k] = json!({});
        }
        cur = &mut cur[*k];
    }
}

/// Defaults applied on every write (create and update) of `rt`.
pub fn on_write(rt: &ResourceType, obj: &mut Value) {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Secret") => {
            set_default(obj, &["type"], json!("Opaque"));
            if let Some(sd) = obj.get("stringData").and_then(Value::as_object).cloned() {
                use base64::Engine;
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or_default();
                    set_default(obj, &["data"], json!({}));
                    obj["data"][&k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
                }
            }
            if let Some(m) = obj.as_object_mut() {
                m.remove("stringData");
            }
        }
        ("", "Namespace") => {
            let name = obj["metadata"]["name"].clone();
            set_default(obj, &["metadata", "labels"], json!({}));
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            set_default(obj, &["spec", "finalizers"], json!(["kubernetes"]));
        }
        ("apps", "Deployment" | "StatefulSet" | "ReplicaSet") => {
            set_default(obj, &["spec", "replicas"], json!(1));
            set_default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            if rt.kind == "Deployment" {
                set_default(obj, &["spec", "progressDeadlineSeconds"], json!(600));
                set_default(
                    obj,
                    &["spec", "strategy"],
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
                );
            }
            if rt.kind == "StatefulSet" {
                set_default(obj, &["spec", "podManagementPolicy"], json!("OrderedReady"));
                set_default(
                    obj,
                    &["spec", "updateStrategy"],
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
            }
        }
        ("apps", "DaemonSet") => {
            set_default(
                obj,
                &["spec", "updateStrategy"],
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
        }
        ("batch", "Job") => {
            set_default(obj, &["spec", "parallelism"], json!(1));
            set_default(obj, &["spec", "completions"], json!(1));
            set_default(obj, &["spec", "backoffLimit"], json!(6));
            set_default(obj, &["spec", "completionMode"], json!("NonIndexed"));
            set_default(obj, &["spec", "suspend"], json!(false));
        }
        ("batch", "CronJob") => {
            set_default(obj, &["spec", "concurrencyPolicy"], json!("Allow"));
            set_default(obj, &["spec", "suspend"], json!(false));
            set_default(obj, &["spec", "successfulJobsHistoryLimit"], json!(3));
            set_default(obj, &["spec", "failedJobsHistoryLimit"], json!(1));
        }
        ("", "Service") => {
            set_default(obj, &["spec", "type"], json!("ClusterIP"));
            set_default(obj, &["spec", "sessionAffinity"], json!("None"));
            if let Some(ports) = obj["spec"]["ports"].as_array_mut() {
                for p in ports {
                    set_default(p, &["protocol"], json!("TCP"));
                    if p.get("targetPort").is_none_or(Value::is_null) {
                        p["targetPort"] = p["port"].clone();
                    }
                }
            }
        }
        _ => {}
    }
}

/// Defaults and status applied only when an object is created.
pub fn on_create(rt: &ResourceType, obj: &mut Value, uid: &str) {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => obj["status"] = json!({"phase": "Active"}),
        ("", "Pod") => obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"}),
        ("", "PersistentVolumeClaim" | "PersistentVolume") => {
            obj["status"] = json!({"phase": "Pending"})
        }
        ("batch", "Job") => {
            let name = obj["metadata"]["name"].clone();
            let labels = json!({
                "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                "controller-uid": uid, "job-name": name,
            });
            if obj["spec"]["manualSelector"] != Value::Bool(true) {
                set_default(
                    obj,
                    &["spec", "selector"],
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
                );
                set_default(obj, &["spec", "template", "metadata", "labels"], json!({}));
                for (k, v) in labels.as_object().into_iter().flatten() {
                    obj["spec"]["template"]["metadata"]["labels"][k] = v.clone();
                }
                set_default(obj, &["metadata", "labels"], json!({}));
                for (k, v) in labels.as_object().into_iter().flatten() {
                    if k != "controller-uid" && k != "batch.kubernetes.io/controller-uid" {
                        set_default(obj, &["metadata", "labels", k], v.clone());
                    }
                }
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let t = now();
            let storage: Vec<Value> = obj["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["storage"] == Value::Bool(true))
                .map(|v| v["name"].clone())
                .collect();
            obj["status"] = json!({
                "acceptedNames": obj["spec"]["names"].clone(),
                "storedVersions": storage,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": t},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": t},
                ],
            });
        }
        _ => {}
    }
}
