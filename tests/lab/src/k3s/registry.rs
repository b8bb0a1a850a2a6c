//! The resource types lab-k3s serves: the built-in kinds rebox and kubectl use, plus one
//! entry per served version of every established CustomResourceDefinition.
//!
//! Contract followed: the names, scopes, short names, verbs and subresources of
//! kube-apiserver v1.35's discovery documents for these kinds (`kubectl api-resources`).
//! Left out: every other built-in kind (they answer 404 as an unknown resource would),
//! `scale`/`exec`/`attach`/`portforward`/`proxy` subresources, API priority and fairness.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResourceType {
    /// API group, "" for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// `<plural>/status` is served and the main resource ignores status changes.
    pub status: bool,
    /// The CustomResourceDefinition that defines it (None for built-in kinds).
    pub crd: Option<String>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// `deployments.apps`, `secrets`: how the API server names the resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// `Deployment.apps`: the kind as named in 422 Invalid messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
    /// Whether writes bump `metadata.generation` (spec-carrying workload kinds and CRs).
    pub fn has_generation(&self) -> bool {
        self.crd.is_some()
            || matches!(
                self.group.as_str(),
                "apps" | "batch" | "apiextensions.k8s.io"
            )
    }
}

/// (group, version, kind, plural, namespaced, short names, status subresource)
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    bool,
);
const BUILTIN: &[Builtin] = &[
    ("", "v1", "Namespace", "namespaces", false, &["ns"], true),
    ("", "v1", "Secret", "secrets", true, &[], false),
    ("", "v1", "ConfigMap", "configmaps", true, &["cm"], false),
    (
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
        &["sa"],
        false,
    ),
    ("", "v1", "Service", "services", true, &["svc"], true),
    ("", "v1", "Pod", "pods", true, &["po"], true),
    (
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        false,
        &["pv"],
        true,
    ),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        &["pvc"],
        true,
    ),
    ("", "v1", "Node", "nodes", false, &["no"], true),
    ("", "v1", "Event", "events", true, &["ev"], false),
    (
        "apps",
        "v1",
        "Deployment",
        "deployments",
        true,
        &["deploy"],
        true,
    ),
    (
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        true,
        &["sts"],
        true,
    ),
    ("apps", "v1", "DaemonSet", "daemonsets", true, &["ds"], true),
    (
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        true,
        &["rs"],
        true,
    ),
    ("batch", "v1", "Job", "jobs", true, &[], true),
    ("batch", "v1", "CronJob", "cronjobs", true, &["cj"], true),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true,
        &[],
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
        false,
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        true,
    ),
    (
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        false,
        &["sc"],
        false,
    ),
    (
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        true,
        &[],
        false,
    ),
];

pub fn builtins() -> Vec<ResourceType> {
    BUILTIN
        .iter()
        .map(|(g, v, k, p, ns, short, status)| ResourceType {
            group: g.to_string(),
            version: v.to_string(),
            kind: k.to_string(),
            plural: p.to_string(),
            singular: k.to_lowercase(),
            namespaced: *ns,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: if matches!(
                *k,
                "Pod"
                    | "Service"
                    | "Deployment"
                    | "StatefulSet"
                    | "DaemonSet"
                    | "ReplicaSet"
                    | "Job"
                    | "CronJob"
            ) {
                vec!["all".into()]
            } else {
                vec![]
            },
            status: *status,
            crd: None,
        })
        .collect()
}

/// The resource types a CustomResourceDefinition object defines (one per served version).
pub fn from_crd(crd: &serde_json::Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let list = |v: &serde_json::Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = vec![];
    for ver in spec["versions"].as_array().into_iter().flatten() {
        if ver["served"] != serde_json::Value::Bool(true) {
            continue;
        }
        let singular = s(&names["singular"]);
        out.push(ResourceType {
            group: s(&spec["group"]),
            version: s(&ver["name"]),
            kind: s(&names["kind"]),
            plural: s(&names["plural"]),
            singular: if singular.is_empty() {
                s(&names["kind"]).to_lowercase()
            } else {
                singular
            },
            namespaced: spec["scope"] == "Namespaced",
            short_names: list(&names["shortNames"]),
            categories: list(&names["categories"]),
            status: ver["subresources"]["status"].is_object(),
            crd: Some(s(&crd["metadata"]["name"])),
        });
    }
    out
}
