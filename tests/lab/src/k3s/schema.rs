//! CustomResourceDefinition schemas: a CRD version's structural `openAPIV3Schema` turned into
//! a JSON Schema (draft 4, the dialect OpenAPI 3.0 schemas derive from) and checked with the
//! `jsonschema` crate; unknown-field detection and pruning follow the structural-schema rules.
//!
//! Contract followed: Kubernetes "Extend the Kubernetes API with CustomResourceDefinitions"
//! (validation, pruning, `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string`,
//! `x-kubernetes-embedded-resource`, `nullable`) and the 422 `Invalid` message wording
//! (`spec.x: Invalid value: "string": spec.x in body must be of type integer: "string"`).
//! Defaulting (`default`) is applied where the parent exists.
//! Left out: CEL rules (`x-kubernetes-validations`), `format` checks,
//! `x-kubernetes-list-type` uniqueness, ratcheting.

use serde_json::{Map, Value};

pub struct CrdSchema {
    raw: Value,
    validator: Option<jsonschema::Validator>,
}

/// One refusal: (field path, message, cause reason).
pub type Cause = (String, String, &'static str);

impl CrdSchema {
    pub fn compile(open_api_v3: &Value) -> CrdSchema {
        if !open_api_v3.is_object() {
            return CrdSchema {
                raw: Value::Null,
                validator: None,
            };
        }
        let converted = convert(open_api_v3);
        let validator = jsonschema::draft4::options()
            .should_validate_formats(false)
            .build(&converted)
            .ok();
        CrdSchema {
            raw: open_api_v3.clone(),
            validator,
        }
    }

    /// Fields the schema does not declare (`spec.foo`, `spec.items[0].bar`), outside
    /// `apiVersion`, `kind` and `metadata`.
    pub fn unknown_fields(&self, obj: &Value) -> Vec<String> {
        let mut out = vec![];
        if self.raw.is_object() {
            walk(&self.raw, obj, "", true, &mut out);
        }
        out
    }

    /// Drops undeclared fields, as the API server's pruning does.
    pub fn prune(&self, obj: &mut Value) {
        if self.raw.is_object() {
            prune(&self.raw, obj, true);
        }
    }

    /// Structural-schema defaulting: a missing field whose schema has `default` gets it
    /// (only where the parent object exists); `null` in a non-nullable field is dropped or
    /// defaulted, as the API server does before validation.
    pub fn default(&self, obj: &mut Value) {
        if self.raw.is_object() {
            default(&self.raw, obj, true);
        }
    }

    pub fn validate(&self, obj: &Value) -> Vec<Cause> {
        let Some(v) = &self.validator else {
            return vec![];
        };
        let mut out: Vec<Cause> = vec![];
        for e in v.iter_errors(obj) {
            let ptr = e.instance_path().to_string();
            let field = pointer_to_field(&ptr);
            let inst = e.instance();
            use jsonschema::error::ValidationErrorKind as K;
            let (msg, reason) = match e.kind() {
                K::Type { kind } => {
                    let want = match kind {
                        jsonschema::error::TypeKind::Single(t) => t.to_string(),
                        jsonschema::error::TypeKind::Multiple(ts) => ts
                            .iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join("/"),
                    };
                    let got = json_type(inst);
                    (format!("{field}: Invalid value: \"{got}\": {field} in body must be of type {want}: \"{got}\""), "FieldValueTypeInvalid")
                }
                K::Required { property } => {
                    let p = property.as_str().unwrap_or_default();
                    let f = if field.is_empty() {
                        p.to_string()
                    } else {
                        format!("{field}.{p}")
                    };
                    (format!("{f}: Required value"), "FieldValueRequired")
                }
                K::Enum { options } => {
                    let opts: Vec<String> = options
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|o| o.to_string())
                        .collect();
                    (
                        format!(
                            "{field}: Unsupported value: {inst}: supported values: {}",
                            opts.join(", ")
                        ),
                        "FieldValueNotSupported",
                    )
                }
                _ => (
                    format!("{field}: Invalid value: {}: {e}", short(inst)),
                    "FieldValueInvalid",
                ),
            };
            let f = msg.split(':').next().unwrap_or_default().to_string();
            if !out.iter().any(|(_, m, _)| m == &msg) {
                out.push((f, msg, reason));
            }
        }
        out
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!("{}...", &s[..80])
    } else {
        s
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `/spec/items/0/name` → `spec.items[0].name`
pub fn pointer_to_field(ptr: &str) -> String {
    let mut out = String::new();
    for seg in ptr.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.chars().all(|c| c.is_ascii_digit()) && !seg.is_empty() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

const COPY: &[&str] = &[
    "required",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "multipleOf",
    "minProperties",
    "maxProperties",
];

/// OpenAPI v3.0 structural schema → JSON Schema draft 4.
fn convert(s: &Value) -> Value {
    let Some(m) = s.as_object() else {
        return Value::Object(Map::new());
    };
    let mut out = Map::new();
    let nullable = m.get("nullable") == Some(&Value::Bool(true));
    let int_or_string = m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if let Some(t) = m.get("type").and_then(Value::as_str) {
        if !int_or_string {
            out.insert(
                "type".into(),
                if nullable {
                    serde_json::json!([t, "null"])
                } else {
                    Value::String(t.into())
                },
            );
        }
    }
    if int_or_string && !m.contains_key("anyOf") {
        out.insert(
            "anyOf".into(),
            serde_json::json!([{"type": "integer"}, {"type": "string"}]),
        );
    }
    for k in COPY {
        if let Some(v) = m.get(*k) {
            out.insert((*k).into(), v.clone());
        }
    }
    if let Some(e) = m.get("enum").and_then(Value::as_array) {
        let mut e = e.clone();
        if nullable {
            e.push(Value::Null);
        }
        out.insert("enum".into(), Value::Array(e));
    }
    if let Some(p) = m.get("properties").and_then(Value::as_object) {
        let props: Map<String, Value> = p.iter().map(|(k, v)| (k.clone(), convert(v))).collect();
        out.insert("properties".into(), Value::Object(props));
    }
    if let Some(ap) = m.get("additionalProperties") {
        out.insert(
            "additionalProperties".into(),
            if ap.is_object() {
                convert(ap)
            } else {
                ap.clone()
            },
        );
    }
    if let Some(i) = m.get("items") {
        out.insert("items".into(), convert(i));
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        if let Some(a) = m.get(k).and_then(Value::as_array) {
            out.insert(k.into(), Value::Array(a.iter().map(convert).collect()));
        }
    }
    if let Some(n) = m.get("not") {
        out.insert("not".into(), convert(n));
    }
    Value::Object(out)
}

fn preserves(s: &Value) -> bool {
    s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
}

/// The schema for key `k` of an object described by `s`: Some(schema), Some(Null) when any
/// value is kept unchecked, None when the field is unknown.
fn child<'a>(s: &'a Value, k: &str, root: bool) -> Option<&'a Value> {
    static ANY: Value = Value::Null;
    if root && matches!(k, "apiVersion" | "kind" | "metadata") {
        return Some(&ANY);
    }
    if s.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true))
        && matches!(k, "apiVersion" | "kind" | "metadata")
    {
        return Some(&ANY);
    }
    if let Some(p) = s.get("properties").and_then(|p| p.get(k)) {
        return Some(p);
    }
    if let Some(ap) = s.get("additionalProperties") {
        if ap.is_object() {
            return Some(ap);
        }
        if ap == &Value::Bool(true) {
            return Some(&ANY);
        }
    }
    if preserves(s) {
        return Some(&ANY);
    }
    None
}

fn walk(s: &Value, v: &Value, path: &str, root: bool, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, cv) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match child(s, k, root) {
                    None => out.push(p),
                    Some(Value::Null) => {}
                    Some(cs) => walk(cs, cv, &p, false, out),
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.get("items") {
                for (i, cv) in a.iter().enumerate() {
                    walk(items, cv, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

fn prune(s: &Value, v: &mut Value, root: bool) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| child(s, k, root).is_some());
            for (k, cv) in m.iter_mut() {
                if let Some(cs) = child(s, k, root) {
                    if !cs.is_null() {
                        prune(cs, cv, false);
                    }
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.get("items") {
                for cv in a.iter_mut() {
                    prune(items, cv, false);
                }
            }
        }
        _ => {}
    }
}

fn default(s: &Value, v: &mut Value, root: bool) {
    match v {
        Value::Object(m) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    if root && k == "metadata" {
                        continue;
                    }
                    let nullable = ps.get("nullable") == Some(&Value::Bool(true));
                    match m.get(k) {
                        Some(Value::Null) if !nullable => match ps.get("default") {
                            Some(d) => {
                                m.insert(k.clone(), d.clone());
                            }
                            None => {
                                m.remove(k);
                            }
                        },
                        None => {
                            if let Some(d) = ps.get("default") {
                                m.insert(k.clone(), d.clone());
                            }
                        }
                        _ => {}
                    }
                }
            }
            for (k, cv) in m.iter_mut() {
                if let Some(cs) = child(s, k, root) {
                    if !cs.is_null() {
                        default(cs, cv, false);
                    }
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.get("items") {
                for cv in a.iter_mut() {
                    default(items, cv, false);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn k3s_structural_schema_rules() {
        let s = CrdSchema::compile(
            &json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
                "n": {"type": "string", "nullable": true},
                "port": {"x-kubernetes-int-or-string": true},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "items": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "integer"}}}},
                "mode": {"type": "string", "default": "x"},
            }}}}),
        );
        let obj = json!({"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "a"},
                         "spec": {"n": null, "port": "http", "free": {"z": 1}, "items": [{"a": 1, "b": 2}], "bogus": 1}});
        assert_eq!(s.unknown_fields(&obj), ["spec.bogus", "spec.items[0].b"]);
        let mut pruned = obj.clone();
        s.prune(&mut pruned);
        s.default(&mut pruned);
        assert_eq!(
            pruned["spec"],
            json!({"n": null, "port": "http", "free": {"z": 1}, "items": [{"a": 1}], "mode": "x"})
        );
        assert!(s.validate(&pruned).is_empty());
        let bad = json!({"spec": {"port": 1.5, "items": [{"a": "one"}]}});
        let fields: Vec<String> = s.validate(&bad).into_iter().map(|c| c.0).collect();
        assert!(
            fields.contains(&"spec.items[0].a".to_string()),
            "{fields:?}"
        );
        assert!(fields.contains(&"spec.port".to_string()), "{fields:?}");
    }
}
