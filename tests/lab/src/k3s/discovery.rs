//! Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<group>`,
//! `/apis/<group>/<version>`, built from the registry (built-in kinds and served CRD versions).
//!
//! Contract followed: the legacy (unaggregated) discovery format of kube-apiserver
//! (`APIVersions`, `APIGroupList`, `APIGroup`, `APIResourceList` with verbs, short names,
//! categories and `<plural>/status`, `pods/log`, `serviceaccounts/token` subresources; `authentication.k8s.io/v1`
//! with `tokenreviews`; the aggregated `metrics.k8s.io/v1beta1`, 503 until metrics-server
//! serves, [`METRICS_GROUP`]). Clients that ask for
//! aggregated discovery (`as=APIGroupDiscoveryList`) get this format with a plain
//! `application/json` content type and fall back, as they do against older servers.
//! Left out: aggregated discovery, `storageVersionHash`.

use serde_json::{json, Value};

use super::registry::ResourceType;

pub const GIT_VERSION: &str = "v1.35.0+k3s1";

pub fn version() -> Value {
    json!({
        "major": "1", "minor": "35", "emulationMajor": "1", "emulationMinor": "35",
        "minCompatibilityMajor": "1", "minCompatibilityMinor": "34",
        "gitVersion": GIT_VERSION, "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.5",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

pub fn api_versions(server_addr: &str) -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_addr}],
    })
}

/// Groups other than core, each with its versions (preferred first).
fn groups(types: &[ResourceType]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = vec![];
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| g == &t.group) {
            Some((_, vs)) => {
                if !vs.contains(&t.version) {
                    vs.push(t.version.clone());
                }
            }
            None => out.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    // Served by the API server itself, not stored (TokenReview; see api::authn_api).
    out.push((AUTHN_GROUP.to_string(), vec!["v1".to_string()]));
    // An aggregated API: listed whether its backend serves or not (see METRICS_GROUP).
    out.push((METRICS_GROUP.to_string(), vec![METRICS_VERSION.to_string()]));
    for (_, vs) in out.iter_mut() {
        vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    }
    out
}

/// Kubernetes version ordering: GA > beta > alpha, then by number.
fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let num_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let major: u32 = rest[..num_end].parse().unwrap_or(0);
    let tail = &rest[num_end..];
    if tail.is_empty() {
        (3, major, 0)
    } else if let Some(b) = tail.strip_prefix("beta") {
        (2, major, b.parse().unwrap_or(0))
    } else if let Some(a) = tail.strip_prefix("alpha") {
        (1, major, a.parse().unwrap_or(0))
    } else {
        (0, major, 0)
    }
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0]})
}

pub fn api_group_list(types: &[ResourceType]) -> Value {
    let gs: Vec<Value> = groups(types)
        .iter()
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

pub fn api_group(types: &[ResourceType], group: &str) -> Option<Value> {
    let (g, vs) = groups(types).into_iter().find(|(g, _)| g == group)?;
    let mut d = group_doc(&g, &vs);
    d["kind"] = json!("APIGroup");
    d["apiVersion"] = json!("v1");
    Some(d)
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `authentication.k8s.io`: TokenReview (create only, cluster-scoped).
pub const AUTHN_GROUP: &str = "authentication.k8s.io";

/// k3s registers `APIService v1beta1.metrics.k8s.io` (k3s
/// `manifests/metrics-server/metrics-apiservice.yaml`). kube-aggregator lists the group in
/// `/apis` whether its backend is available or not, and proxies `/apis/metrics.k8s.io/v1beta1…`
/// to metrics-server, answering 503 `service unavailable` while that is not Available
/// (kube-aggregator `pkg/apiserver/handler_proxy.go`). The lab runs no metrics-server: the
/// group answers only once a test makes Deployment `kube-system/metrics-server` Available
/// (and an `api` fault on its path makes it fail again later).
pub const METRICS_GROUP: &str = "metrics.k8s.io";
pub const METRICS_VERSION: &str = "v1beta1";

/// The metrics API's resources, once metrics-server serves.
pub fn metrics_resource_list() -> Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{METRICS_GROUP}/{METRICS_VERSION}"), "resources": [
        {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
        {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}]})
}

pub fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    if group == AUTHN_GROUP && version == "v1" {
        return Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
            {"name": "tokenreviews", "singularName": "tokenreview", "namespaced": false, "kind": "TokenReview", "verbs": ["create"]}]}),
        );
    }
    let mine: Vec<&ResourceType> = types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let mut resources = vec![];
    for t in mine {
        let mut r = json!({
            "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
            "kind": t.kind, "verbs": VERBS,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status {
            resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
        if t.group.is_empty() && t.kind == "ServiceAccount" {
            resources.push(json!({"name": "serviceaccounts/token", "singularName": "", "namespaced": true, "group": AUTHN_GROUP, "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}));
        }
        if t.group.is_empty() && t.kind == "Pod" {
            resources.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
        }
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}
