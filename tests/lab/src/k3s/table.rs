//! Server-side printing: `meta.k8s.io/v1` `Table` responses for clients that ask for them
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`, what `kubectl get` sends).
//!
//! Contract followed: the default table convertor's shape (columnDefinitions, rows with
//! cells and a `PartialObjectMetadata` object) with columns NAME, a STATUS column for
//! Namespaces and Pods (phase), and AGE.
//! Left out: the kind-specific columns of kube-apiserver's printers (READY, UP-TO-DATE...)
//! and CRD `additionalPrinterColumns`.

use serde_json::{json, Value};

use super::registry::ResourceType;

pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn age(ts: &str) -> String {
    let Some(t) = super::defaults::parse_time(ts) else {
        return "<unknown>".into();
    };
    let s = (chrono::Utc::now() - t).num_seconds().max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn has_status_column(rt: &ResourceType) -> bool {
    rt.group.is_empty()
        && matches!(
            rt.kind.as_str(),
            "Namespace" | "Pod" | "PersistentVolumeClaim" | "PersistentVolume"
        )
}

pub fn table(rt: &ResourceType, objs: &[Value], rv: Option<u64>, with_columns: bool) -> Value {
    let mut cols = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    if has_status_column(rt) {
        cols.push(json!({"name": "Status", "type": "string", "format": "", "description": "The phase.", "priority": 0}));
    }
    cols.push(json!({"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}));
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            if has_status_column(rt) {
                cells.push(o["status"]["phase"].clone());
            }
            cells.push(json!(age(o["metadata"]["creationTimestamp"].as_str().unwrap_or_default())));
            let mut meta = o["metadata"].clone();
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}})
        })
        .collect();
    let mut t =
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "rows": rows});
    if with_columns {
        t["columnDefinitions"] = json!(cols);
    }
    if let Some(rv) = rv {
        t["metadata"]["resourceVersion"] = json!(rv.to_string());
    }
    t
}
