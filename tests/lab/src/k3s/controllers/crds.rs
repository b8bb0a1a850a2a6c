//! The CustomResourceDefinitions the lab's controllers bring, generated from OUR OWN typed
//! Rust structs (kube-derive + schemars), never read from `../shared/crds` (a user's clone
//! has no such directory).
//!
//! Contract followed: the public API types of
//! - k3s helm-controller v0.17.7 (`pkg/apis/helm.cattle.io/v1/types.go`, platform-facts §3):
//!   HelmChart and HelmChartConfig, every spec field, status `jobName` + `conditions`;
//!   k3s registers these itself at server start ([`k3s_builtin`]);
//! - External Secrets Operator v1 (platform-facts §4): ClusterSecretStore with the `vault`
//!   provider and ExternalSecret (registered when the ESO chart installs);
//! - Argo CD (platform-facts §5): Application and AppProject (registered by the argo-cd chart).
//!
//! Left out (on purpose, so the lab refuses rather than silently accepts): every ESO provider
//! but `vault` and Vault auth methods but `kubernetes`/`tokenSecretRef`/`appRole`; Argo CD
//! fields rebox and the homelab never write (multi-source `sources` is kept, ApplicationSet is
//! not served); status schemas of ESO and Argo CD are `x-kubernetes-preserve-unknown-fields`
//! (their controllers in this crate own them). `tests/lab/tests/lab/controllers_crds.rs` checks
//! every property we declare against the upstream CRDs in `../shared/crds` when present.

use std::collections::BTreeMap;

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

fn string_default_empty(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "default": ""})
}
fn driver_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["secret", "configmap"], "default": "secret"})
}
fn failure_policy_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["abort", "reinstall", "retry"], "default": "reinstall"})
}
fn server_side_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["true", "false", "auto"]})
}
fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"x-kubernetes-int-or-string": true})
}
fn preserve(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"x-kubernetes-preserve-unknown-fields": true})
}
fn preserve_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}
fn int_or_string_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": true}})
}

// ---------------------------------------------------------------- helm.cattle.io/v1

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
pub struct LocalObjectRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "string_default_empty")]
    pub name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
pub struct SecretSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    #[serde(
        default,
        rename = "ignoreUpdates",
        skip_serializing_if = "Option::is_none"
    )]
    pub ignore_updates: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
pub struct Profile {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(
        default,
        rename = "localhostProfile",
        skip_serializing_if = "Option::is_none"
    )]
    pub localhost_profile: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
pub struct SeLinuxOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowsOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmsa_credential_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmsa_credential_spec_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_process: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
pub struct Sysctl {
    pub name: String,
    pub value: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<Vec<String>>,
}

/// core/v1 PodSecurityContext as helm-controller v0.17.7 embeds it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_armor_profile: Option<Profile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group_change_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    #[serde(
        default,
        rename = "seLinuxChangePolicy",
        skip_serializing_if = "Option::is_none"
    )]
    pub se_linux_change_policy: Option<String>,
    #[serde(
        default,
        rename = "seLinuxOptions",
        skip_serializing_if = "Option::is_none"
    )]
    pub se_linux_options: Option<SeLinuxOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<Profile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplemental_groups: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplemental_groups_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysctls: Option<Vec<Sysctl>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_options: Option<WindowsOptions>,
}

/// core/v1 SecurityContext as helm-controller v0.17.7 embeds it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_armor_profile: Option<Profile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc_mount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    #[serde(
        default,
        rename = "seLinuxOptions",
        skip_serializing_if = "Option::is_none"
    )]
    pub se_linux_options: Option<SeLinuxOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<Profile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_options: Option<WindowsOptions>,
}

/// `helm.cattle.io/v1` HelmChart (platform-facts §3).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "helm.cattle.io",
    version = "v1",
    kind = "HelmChart",
    namespaced,
    status = "HelmChartStatus",
    printcolumn = r#"{"name":"Repo","type":"string","jsonPath":".spec.repo"}"#,
    printcolumn = r#"{"name":"Chart","type":"string","jsonPath":".spec.chart"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"TargetNamespace","type":"string","jsonPath":".spec.targetNamespace"}"#,
    printcolumn = r#"{"name":"Bootstrap","type":"boolean","jsonPath":".spec.bootstrap"}"#,
    printcolumn = r#"{"name":"Failed","type":"string","jsonPath":".status.conditions[?(@.type=='Failed')].status"}"#,
    printcolumn = r#"{"name":"Job","type":"string","jsonPath":".status.jobName","priority":10}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_pass_credentials: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<LocalObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_off_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_namespace: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_registry_secret: Option<LocalObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "driver_schema")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "failure_policy_schema")]
    pub failure_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_conflicts: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_version: Option<String>,
    #[serde(
        default,
        rename = "insecureSkipTLSVerify",
        skip_serializing_if = "Option::is_none"
    )]
    pub insecure_skip_tls_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_image: Option<String>,
    #[serde(default, rename = "plainHTTP", skip_serializing_if = "Option::is_none")]
    pub plain_http: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, rename = "repoCA", skip_serializing_if = "Option::is_none")]
    pub repo_ca: Option<String>,
    #[serde(
        default,
        rename = "repoCAConfigMap",
        skip_serializing_if = "Option::is_none"
    )]
    pub repo_ca_config_map: Option<LocalObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "server_side_schema")]
    pub server_side: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string_map")]
    pub set: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take_ownership: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve")]
    pub values: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_secrets: Option<Vec<SecretSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
pub struct ChartCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<ChartCondition>>,
}

/// `helm.cattle.io/v1` HelmChartConfig (no status subresource upstream).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "helm.cattle.io",
    version = "v1",
    kind = "HelmChartConfig",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartConfigSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "failure_policy_schema")]
    pub failure_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_conflicts: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "server_side_schema")]
    pub server_side: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve")]
    pub values: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_secrets: Option<Vec<SecretSpec>>,
}

// ---------------------------------------------------------------- external-secrets.io/v1

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
pub struct SecretKeySelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
pub struct ServiceAccountSelector {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultKubernetesAuth {
    #[serde(default = "default_kubernetes")]
    #[schemars(default = "default_kubernetes")]
    pub mount_path: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountSelector>,
}
fn default_kubernetes() -> String {
    "kubernetes".into()
}
fn default_approle() -> String {
    "approle".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultAppRole {
    #[serde(default = "default_approle")]
    #[schemars(default = "default_approle")]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_ref: Option<SecretKeySelector>,
    pub secret_ref: SecretKeySelector,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<VaultKubernetesAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role: Option<VaultAppRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
pub enum VaultKvVersion {
    #[serde(rename = "v1")]
    V1,
    #[serde(rename = "v2")]
    V2,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultProvider {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "vault_version")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<VaultAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_your_writes: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_inconsistent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}
fn vault_version(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["v1", "v2"], "default": "v2"})
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
pub struct StoreProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultProvider>,
}

/// `external-secrets.io/v1` ClusterSecretStore (vault provider only).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "ClusterSecretStore",
    shortname = "css",
    category = "external-secrets",
    status = "PreservedStatus",
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Capabilities","type":"string","jsonPath":".status.capabilities"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreSpec {
    pub provider: StoreProvider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub refresh_interval: Option<Value>,
}

/// Status owned by a controller of this crate: any fields, kept as written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[schemars(schema_with = "preserve_object")]
pub struct PreservedStatus(pub Value);

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
pub struct RemoteRef {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretData {
    pub secret_key: String,
    pub remote_ref: RemoteRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
pub struct DataFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<RemoteRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
pub enum StoreKind {
    SecretStore,
    ClusterSecretStore,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
pub struct StoreRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StoreKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "creation_policy")]
    pub creation_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "deletion_policy")]
    pub deletion_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}
fn creation_policy(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["Owner", "Orphan", "Merge", "None", "CreateOrMerge"], "default": "Owner"})
}
fn deletion_policy(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["Delete", "Merge", "Retain"], "default": "Retain"})
}

/// `external-secrets.io/v1` ExternalSecret (data / dataFrom.extract, no templates).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "ExternalSecret",
    namespaced,
    shortname = "es",
    category = "external-secrets",
    status = "PreservedStatus",
    printcolumn = r#"{"name":"StoreType","type":"string","jsonPath":".spec.secretStoreRef.kind"}"#,
    printcolumn = r#"{"name":"Store","type":"string","jsonPath":".spec.secretStoreRef.name"}"#,
    printcolumn = r#"{"name":"Refresh Interval","type":"string","jsonPath":".spec.refreshInterval"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<ExternalSecretData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_from: Option<Vec<DataFrom>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(default = "default_refresh")]
    pub refresh_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "refresh_policy")]
    pub refresh_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_store_ref: Option<StoreRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(default = "default_target")]
    pub target: Option<ExternalSecretTarget>,
}
fn default_target() -> Option<ExternalSecretTarget> {
    Some(ExternalSecretTarget {
        name: None,
        creation_policy: Some("Owner".into()),
        deletion_policy: Some("Retain".into()),
        immutable: None,
    })
}
fn default_refresh() -> Option<String> {
    Some("1h0m0s".into())
}
fn refresh_policy(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["CreatedOnce", "Periodic", "OnChange"]})
}

// ---------------------------------------------------------------- argoproj.io/v1alpha1

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppSource {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub ref_: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
pub struct AppDestination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Automated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_heal: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_empty: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated: Option<Automated>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_options: Option<Vec<String>>,
}

/// `argoproj.io/v1alpha1` Application.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "argoproj.io",
    version = "v1alpha1",
    kind = "Application",
    namespaced,
    shortname = "app",
    shortname = "apps",
    status = "PreservedStatus",
    printcolumn = r#"{"name":"Sync Status","type":"string","jsonPath":".status.sync.status"}"#,
    printcolumn = r#"{"name":"Health Status","type":"string","jsonPath":".status.health.status"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.sync.revision","priority":10}"#,
    printcolumn = r#"{"name":"Project","type":"string","jsonPath":".spec.project","priority":10}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    pub project: String,
    pub destination: AppDestination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<AppSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<AppSource>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_policy: Option<SyncPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
pub struct GroupKind {
    pub group: String,
    pub kind: String,
}

/// `argoproj.io/v1alpha1` AppProject.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "argoproj.io",
    version = "v1alpha1",
    kind = "AppProject",
    namespaced,
    shortname = "appproj",
    shortname = "appprojs",
    status = "PreservedStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct AppProjectSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_repos: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<AppDestination>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_resource_whitelist: Option<Vec<GroupKind>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_resource_whitelist: Option<Vec<GroupKind>>,
}

// ---------------------------------------------------------------- output

/// Removes what the upstream CRDs never carry: schemars' `nullable` on optional fields.
fn tidy(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("nullable");
            if let Some(Value::Array(e)) = m.get_mut("enum") {
                e.retain(|x| !x.is_null());
            }
            for x in m.values_mut() {
                tidy(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(tidy),
        _ => {}
    }
}

fn crd_value<K: CustomResourceExt>() -> Value {
    let mut v = serde_json::to_value(K::crd()).expect("CRD serializes");
    tidy(&mut v);
    for ver in v["spec"]["versions"].as_array_mut().into_iter().flatten() {
        // Upstream CRDs never require `spec` at the root (kube-derive does).
        if let Some(root) = ver["schema"]["openAPIV3Schema"].as_object_mut() {
            root.remove("required");
        }
        // As controller-gen writes them: the root's type meta and metadata.
        let props = &mut ver["schema"]["openAPIV3Schema"]["properties"];
        props["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."});
        props["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."});
        props["metadata"] = json!({"type": "object"});
    }
    // kube-apiserver defaults listKind to <kind>List; the upstream files spell it out.
    if v["spec"]["names"]["listKind"].is_null() {
        let kind = v["spec"]["names"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        v["spec"]["names"]["listKind"] = json!(format!("{kind}List"));
    }
    if let Some(m) = v["metadata"].as_object_mut() {
        m.insert(
            "labels".into(),
            json!({"app.kubernetes.io/managed-by": "lab"}),
        );
    }
    v
}

/// The CRDs k3s itself serves from its first start (helm-controller is built in).
pub fn k3s_builtin() -> Vec<Value> {
    vec![crd_value::<HelmChart>(), crd_value::<HelmChartConfig>()]
}

/// ESO's CRDs (the external-secrets chart with `installCRDs: true`).
pub fn eso() -> Vec<Value> {
    vec![
        crd_value::<ClusterSecretStore>(),
        crd_value::<ExternalSecret>(),
    ]
}

/// Argo CD's CRDs (the argo-cd chart with `crds.install: true`).
///
/// Argo CD's CRDs have no status subresource: its controllers write `status` through the main
/// resource (the schema still declares `status`).
pub fn argocd() -> Vec<Value> {
    let mut crds = vec![crd_value::<Application>(), crd_value::<AppProject>()];
    for crd in &mut crds {
        for ver in crd["spec"]["versions"].as_array_mut().into_iter().flatten() {
            if let Some(m) = ver.as_object_mut() {
                m.remove("subresources");
            }
        }
    }
    crds
}
