//! Admission of an object body: kind/apiVersion match, decoding and unknown fields
//! (`fieldValidation` Ignore / Warn / Strict), CRD schema validation, name rules and the
//! handful of semantic checks rebox's manifests depend on. Admission webhooks: [`super::webhooks`].
//!
//! Contract followed: kube-apiserver's field validation (default Warn: unknown fields are
//! dropped and reported in a `Warning: 299` header; Strict: 400 BadRequest
//! `strict decoding error: unknown field "spec.foo"`), 422 Invalid for schema and semantic
//! errors, RFC 1123 name rules.
//! Left out: most of the built-in kinds' semantic validation (only the checks below),
//! quota, RBAC authorization (every authenticated client is admin).

use serde_json::Value;

use super::registry::ResourceType;
use super::status::{ApiError, ApiResult};
use super::store::Inner;
use super::typed;

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> ApiResult<Self> {
        match s {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Ignore") => Ok(Self::Ignore),
            Some("Strict") => Ok(Self::Strict),
            Some(o) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {o:?}"
            ))),
        }
    }
}

/// Per-request options of a write.
pub struct WriteCtx {
    pub validation: FieldValidation,
    pub warnings: Vec<String>,
    pub dry_run: bool,
    pub manager: String,
}

fn decode_error(rt: &ResourceType, msg: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: {msg}",
        rt.kind, rt.version, rt.kind
    ))
}

/// Checks `obj` against its type and returns it normalized (unknown fields dropped).
pub fn admit(inner: &Inner, rt: &ResourceType, obj: Value, ctx: &mut WriteCtx) -> ApiResult<Value> {
    admit_inner(inner, rt, obj, ctx, false)
}

/// Decoding and unknown-field checks only: for an apply configuration, which need not be a
/// complete object (the merged result is admitted in full afterwards).
pub fn admit_partial(
    inner: &Inner,
    rt: &ResourceType,
    obj: Value,
    ctx: &mut WriteCtx,
) -> ApiResult<Value> {
    admit_inner(inner, rt, obj, ctx, true)
}

fn admit_inner(
    inner: &Inner,
    rt: &ResourceType,
    obj: Value,
    ctx: &mut WriteCtx,
    partial: bool,
) -> ApiResult<Value> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (mut obj, unknown) = decode(inner, rt, obj, partial)?;
    if !unknown.is_empty() {
        match ctx.validation {
            FieldValidation::Strict => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|p| format!("unknown field \"{p}\""))
                    .collect();
                return Err(decode_error(
                    rt,
                    &format!("strict decoding error: {}", list.join(", ")),
                ));
            }
            FieldValidation::Warn => ctx
                .warnings
                .extend(unknown.iter().map(|p| format!("unknown field \"{p}\""))),
            FieldValidation::Ignore => {}
        }
    }
    if partial {
        return Ok(obj);
    }
    if let Some(crd) = &rt.crd {
        if let Some(s) = inner.schemas.get(&(crd.clone(), rt.version.clone())) {
            let causes = s.validate(&obj);
            if !causes.is_empty() {
                return Err(ApiError::invalid(rt, &name, causes));
            }
        }
    }
    let mut causes = vec![];
    check_name(rt, &obj, &mut causes);
    check_annotations(&obj, &mut causes);
    semantic(rt, &obj, &mut causes);
    if !causes.is_empty() {
        return Err(ApiError::invalid(rt, &name, causes));
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    Ok(obj)
}

trait KindHint {
    fn with_kind_hint(self, got: &str, want: &str) -> Self;
}
impl KindHint for ApiError {
    fn with_kind_hint(mut self, got: &str, want: &str) -> Self {
        if got != want {
            self.message =
                format!("the kind in the data ({got}) does not match the expected kind ({want})");
        }
        self
    }
}

const SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

fn check_name(rt: &ResourceType, obj: &Value, causes: &mut Vec<(String, String, &'static str)>) {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        causes.push((
            "metadata.name".into(),
            "metadata.name: Required value: name or generateName is required".into(),
            "FieldValueRequired",
        ));
        return;
    }
    let label_only = matches!(rt.kind.as_str(), "Namespace" | "Service") && rt.group.is_empty();
    let ok = if label_only {
        is_label(name)
    } else {
        is_subdomain(name)
    };
    if !ok && rt.group != "rbac.authorization.k8s.io" {
        let rule = if label_only { LABEL } else { SUBDOMAIN };
        causes.push((
            "metadata.name".into(),
            format!("metadata.name: Invalid value: \"{name}\": {rule}"),
            "FieldValueInvalid",
        ));
    }
}

/// apimachinery `ValidateAnnotations`: keys and values together at most 256 KiB.
fn check_annotations(obj: &Value, causes: &mut Vec<(String, String, &'static str)>) {
    let total: usize = obj["metadata"]["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    if total > 262144 {
        causes.push((
            "metadata.annotations".into(),
            "metadata.annotations: Too long: may not be more than 262144 bytes".into(),
            "FieldValueTooLong",
        ));
    }
}

fn required(v: &Value, field: &str, causes: &mut Vec<(String, String, &'static str)>) {
    let missing = match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    if missing {
        causes.push((
            field.into(),
            format!("{field}: Required value"),
            "FieldValueRequired",
        ));
    }
}

fn pod_spec(spec: &Value, at: &str, causes: &mut Vec<(String, String, &'static str)>) {
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        required(&Value::Null, &format!("{at}.containers"), causes);
    }
    for (i, c) in containers.iter().enumerate() {
        required(&c["name"], &format!("{at}.containers[{i}].name"), causes);
        required(&c["image"], &format!("{at}.containers[{i}].image"), causes);
    }
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .map(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
        .unwrap_or(true)
}

/// The semantic checks of kube-apiserver's validation that rebox's manifests can trip.
fn semantic(rt: &ResourceType, obj: &Value, causes: &mut Vec<(String, String, &'static str)>) {
    let spec = &obj["spec"];
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            required(&spec["selector"], "spec.selector", causes);
            pod_spec(&spec["template"]["spec"], "spec.template.spec", causes);
            if spec["selector"].is_object()
                && !labels_match(&spec["selector"], &spec["template"]["metadata"]["labels"])
            {
                let sel = spec["template"]["metadata"]["labels"].to_string();
                causes.push(("spec.template.metadata.labels".into(), format!("spec.template.metadata.labels: Invalid value: {sel}: `selector` does not match template `labels`"), "FieldValueInvalid"));
            }
        }
        ("batch", "Job") => {
            pod_spec(&spec["template"]["spec"], "spec.template.spec", causes);
            let rp = spec["template"]["spec"]["restartPolicy"]
                .as_str()
                .unwrap_or_default();
            if rp != "OnFailure" && rp != "Never" {
                causes.push(("spec.template.spec.restartPolicy".into(), format!("spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\" (got {rp:?})"), "FieldValueRequired"));
            }
        }
        ("batch", "CronJob") => {
            required(&spec["schedule"], "spec.schedule", causes);
            pod_spec(
                &spec["jobTemplate"]["spec"]["template"]["spec"],
                "spec.jobTemplate.spec.template.spec",
                causes,
            );
        }
        ("", "Pod") => pod_spec(spec, "spec", causes),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let want = format!(
                "{}.{}",
                spec["names"]["plural"].as_str().unwrap_or_default(),
                spec["group"].as_str().unwrap_or_default()
            );
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            if name != want {
                causes.push(("metadata.name".into(), format!("metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"), "FieldValueInvalid"));
            }
            let storage = spec["versions"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter(|x| x["storage"] == Value::Bool(true))
                        .count()
                })
                .unwrap_or(0);
            if storage != 1 {
                causes.push(("spec.versions".into(), "spec.versions: Invalid value: must have exactly one version marked as storage version".into(), "FieldValueInvalid"));
            }
        }
        _ => {}
    }
}

/// Kind/apiVersion check and decoding: (object without unknown fields, their paths).
pub fn decode(
    inner: &Inner,
    rt: &ResourceType,
    obj: Value,
    partial: bool,
) -> ApiResult<(Value, Vec<String>)> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the request body",
        ));
    }
    let kind = obj["kind"].as_str().unwrap_or_default();
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    if kind.is_empty() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the request body",
        ));
    }
    if kind != rt.kind || api_version != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        ))
        .with_kind_hint(kind, &rt.kind));
    }
    let (obj, unknown) = match &rt.crd {
        None => typed::check(&rt.group, &rt.kind, &obj).map_err(|e| decode_error(rt, &e))?,
        Some(crd) => {
            let schema = inner
                .schemas
                .get(&(crd.clone(), rt.version.clone()))
                .cloned();
            let (meta, mut unknown) =
                typed::check_meta(&obj["metadata"]).map_err(|e| decode_error(rt, &e))?;
            let mut o = obj.clone();
            o["metadata"] = meta;
            if let Some(s) = &schema {
                unknown.extend(s.unknown_fields(&obj));
                s.prune(&mut o);
                if !partial {
                    s.default(&mut o);
                }
            }
            (o, unknown)
        }
    };
    Ok((obj, unknown))
}
