//! `/openapi/v3`: the index of group-version documents and, per group-version, the paths of
//! every resource with their PATCH operations, their `x-kubernetes-group-version-kind` and
//! the query parameters kube-apiserver accepts (`fieldValidation`, `fieldManager`, `force`,
//! `dryRun`).
//!
//! Contract followed: kube-apiserver's OpenAPI v3 discovery (`{"paths": {"apis/apps/v1":
//! {"serverRelativeURL": "/openapi/v3/apis/apps/v1?hash=..."}}}`), which is what kubectl
//! 1.27+ reads to decide that field validation happens on the server (it then sends
//! `fieldValidation=Strict`). The PATCH request bodies do not list strategic merge patch,
//! so kubectl builds strategic patches for built-in kinds from its compiled-in types.
//! Left out: component schemas (so `kubectl explain` has nothing to show) and `/openapi/v2`
//! (answered 404; kubectl treats that as "no v2 document").

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::registry::ResourceType;

fn gv_path(t: &ResourceType) -> String {
    if t.group.is_empty() {
        format!("api/{}", t.version)
    } else {
        format!("apis/{}/{}", t.group, t.version)
    }
}

pub fn index(types: &[ResourceType]) -> Value {
    let mut paths = Map::new();
    let mut gvs: Vec<String> = types.iter().map(gv_path).collect();
    gvs.sort();
    gvs.dedup();
    for gv in gvs {
        let doc = document(types, &gv).unwrap_or(Value::Null);
        let hash = hex::encode(Sha256::digest(doc.to_string().as_bytes()));
        paths.insert(gv.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={}", &hash[..32].to_uppercase())}));
    }
    json!({"paths": paths})
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

pub fn document(types: &[ResourceType], gv: &str) -> Option<Value> {
    let mine: Vec<&ResourceType> = types.iter().filter(|t| gv_path(t) == gv).collect();
    if mine.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for t in mine {
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let base = if t.namespaced {
            format!("/{gv}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("/{gv}/{}", t.plural)
        };
        let body_types = [
            "application/apply-patch+yaml",
            "application/json-patch+json",
            "application/merge-patch+json",
        ];
        let content: Map<String, Value> = body_types
            .iter()
            .map(|c| (c.to_string(), json!({"schema": {"type": "object"}})))
            .collect();
        let obj_schema = json!({"content": {"application/json": {"schema": {"type": "object"}}}});
        let mut item = json!({
            "get": {"x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk, "responses": {"200": obj_schema}},
            "put": {"x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk,
                     "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
                     "requestBody": obj_schema, "responses": {"200": obj_schema}},
            "patch": {"x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
                       "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation"), param("force")],
                       "requestBody": {"content": content}, "responses": {"200": obj_schema}},
            "delete": {"x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": gvk, "responses": {"200": obj_schema}},
        });
        if t.namespaced {
            item["parameters"] = json!([{"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]);
        }
        paths.insert(format!("{base}/{{name}}"), item);
        paths.insert(base, json!({
            "get": {"x-kubernetes-action": "list", "x-kubernetes-group-version-kind": gvk, "responses": {"200": obj_schema}},
            "post": {"x-kubernetes-action": "post", "x-kubernetes-group-version-kind": gvk,
                      "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
                      "requestBody": obj_schema, "responses": {"201": obj_schema}},
        }));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": super::discovery::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
