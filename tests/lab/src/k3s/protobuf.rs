//! `application/vnd.kubernetes.protobuf` request bodies, which kubectl's typed clients send
//! (`kubectl create namespace|secret|configmap|deployment|job ...`, `create job --from`).
//!
//! Contract followed: the Kubernetes protobuf envelope ("API concepts: Protobuf encoding"):
//! the 4-byte magic `k8s\0`, then a `runtime.Unknown` whose `typeMeta` names apiVersion/kind
//! and whose `raw` is the object encoded with the upstream `generated.proto` messages
//! (vendored in `proto/`, Kubernetes 1.35, compiled at first use with protox). The decoded
//! message becomes the same JSON the JSON serializer would produce: `Time` as RFC 3339
//! seconds (an empty `Time` is unset), `Quantity`/`IntOrString` as scalars,
//! `RawExtension`/`JSON`/`FieldsV1` as embedded JSON, bytes as base64, empty strings
//! omitted (Go's `omitempty`), JSONSchemaProps' `$ref`/`$schema`/`x-kubernetes-*` names.
//! Left out: protobuf responses (clients are answered in JSON, which they also accept),
//! `contentEncoding`, kinds outside the vendored groups (415).

use std::sync::OnceLock;

use base64::Engine;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value as PValue,
};
use serde_json::{json, Map, Value};

macro_rules! protos {
    ($($path:literal),* $(,)?) => { &[$(($path, include_str!(concat!("proto/", $path)))),*] };
}

const FILES: &[(&str, &str)] = protos![
    "k8s.io/apimachinery/pkg/api/resource/generated.proto",
    "k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto",
    "k8s.io/apimachinery/pkg/runtime/generated.proto",
    "k8s.io/apimachinery/pkg/runtime/schema/generated.proto",
    "k8s.io/apimachinery/pkg/util/intstr/generated.proto",
    "k8s.io/api/core/v1/generated.proto",
    "k8s.io/api/apps/v1/generated.proto",
    "k8s.io/api/batch/v1/generated.proto",
    "k8s.io/api/rbac/v1/generated.proto",
    "k8s.io/api/storage/v1/generated.proto",
    "k8s.io/api/coordination/v1/generated.proto",
    "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1/generated.proto",
];

struct Embedded;

impl protox::file::FileResolver for Embedded {
    fn resolve_path(&self, path: &std::path::Path) -> Option<String> {
        path.to_str().map(String::from)
    }
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match FILES.iter().find(|(n, _)| *n == name) {
            Some((n, src)) => protox::file::File::from_source(n, src),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

fn pool() -> Result<&'static DescriptorPool, String> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut c = protox::Compiler::with_file_resolver(Embedded);
        c.include_imports(true);
        c.open_files(FILES.iter().map(|(n, _)| *n))
            .map_err(|e| format!("compiling Kubernetes protos: {e}"))?;
        Ok(c.descriptor_pool())
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn package(api_version: &str) -> Option<String> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let g = match group {
        "" => "core",
        "apps" | "batch" => group,
        "rbac.authorization.k8s.io" => "rbac",
        "storage.k8s.io" => "storage",
        "coordination.k8s.io" => "coordination",
        "apiextensions.k8s.io" => {
            return Some(format!(
                "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.{version}"
            ))
        }
        _ => return None,
    };
    Some(format!("k8s.io.api.{g}.{version}"))
}

/// Decodes a protobuf body into the JSON form of the object.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let raw = body
        .strip_prefix(b"k8s\0")
        .ok_or("protobuf body without the k8s\\0 prefix")?;
    let pool = pool()?;
    let unknown_desc = pool
        .get_message_by_name("k8s.io.apimachinery.pkg.runtime.Unknown")
        .ok_or("runtime.Unknown missing")?;
    let unknown = DynamicMessage::decode(unknown_desc, raw)
        .map_err(|e| format!("decoding runtime.Unknown: {e}"))?;
    let tm = unknown
        .get_field_by_name("typeMeta")
        .ok_or("typeMeta missing")?;
    let tm = tm.as_message().ok_or("typeMeta is not a message")?;
    let field = |m: &DynamicMessage, f: &str| {
        m.get_field_by_name(f)
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    };
    let (api_version, kind) = (field(tm, "apiVersion"), field(tm, "kind"));
    let desc = package(&api_version)
        .and_then(|p| pool.get_message_by_name(&format!("{p}.{kind}")))
        .ok_or_else(|| format!("no protobuf message for {api_version} {kind}"))?;
    let inner = unknown
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let msg = DynamicMessage::decode(desc, inner.as_ref())
        .map_err(|e| format!("decoding {kind}: {e}"))?;
    let mut v = message(&msg);
    if !v.is_object() {
        v = json!({});
    }
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}

fn rfc3339(secs: i64) -> Value {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

fn raw_json(m: &DynamicMessage, f: &str) -> Value {
    m.get_field_by_name(f)
        .and_then(|v| v.as_bytes().cloned())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn json_name(msg: &str, field: &str) -> String {
    if msg.ends_with(".JSONSchemaProps") {
        match field {
            "ref" => return "$ref".into(),
            "schema" => return "$schema".into(),
            f if f.starts_with("xKubernetes") => {
                let mut out = String::from("x-kubernetes");
                for c in f["xKubernetes".len()..].chars() {
                    if c.is_ascii_uppercase() {
                        out.push('-');
                        out.push(c.to_ascii_lowercase());
                    } else {
                        out.push(c);
                    }
                }
                return out;
            }
            _ => {}
        }
    }
    field.to_string()
}

/// Protobuf fields that are inline (embedded) structs in the Go types' JSON form.
const INLINE: &[&str] = &[
    "localObjectReference",
    "volumeSource",
    "persistentVolumeSource",
    "ephemeralContainerCommon",
];

fn message(m: &DynamicMessage) -> Value {
    let d: MessageDescriptor = m.descriptor();
    let name = d.full_name();
    let get = |f: &str| m.get_field_by_name(f);
    match name {
        "k8s.io.apimachinery.pkg.apis.meta.v1.Time"
        | "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime" => {
            return match m.has_field_by_name("seconds") {
                true => rfc3339(get("seconds").and_then(|v| v.as_i64()).unwrap_or(0)),
                false => Value::Null,
            };
        }
        "k8s.io.apimachinery.pkg.api.resource.Quantity" => {
            return json!(get("string")
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default())
        }
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => {
            return if get("type").and_then(|v| v.as_i64()) == Some(1) {
                json!(get("strVal")
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default())
            } else {
                json!(get("intVal").and_then(|v| v.as_i32()).unwrap_or(0))
            };
        }
        "k8s.io.apimachinery.pkg.apis.meta.v1.Duration" => {
            let ns = get("duration").and_then(|v| v.as_i64()).unwrap_or(0);
            return json!(format!("{}s", ns as f64 / 1e9));
        }
        "k8s.io.apimachinery.pkg.runtime.RawExtension"
        | "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1" => return raw_json(m, "Raw"),
        n if n.ends_with("apiextensions.v1.JSON") => return raw_json(m, "raw"),
        n if n.ends_with("apiextensions.v1.JSONSchemaPropsOrBool") => {
            return match m.has_field_by_name("schema") {
                true => message(get("schema").unwrap().as_message().unwrap()),
                false => json!(get("allows").and_then(|v| v.as_bool()).unwrap_or(false)),
            };
        }
        n if n.ends_with("apiextensions.v1.JSONSchemaPropsOrArray") => {
            return match m.has_field_by_name("schema") {
                true => message(get("schema").unwrap().as_message().unwrap()),
                false => get("jSONSchemas").map(|v| value(&v)).unwrap_or(json!([])),
            };
        }
        n if n.ends_with("apiextensions.v1.JSONSchemaPropsOrStringArray") => {
            return match m.has_field_by_name("schema") {
                true => message(get("schema").unwrap().as_message().unwrap()),
                false => get("property").map(|v| value(&v)).unwrap_or(json!([])),
            };
        }
        _ => {}
    }
    let mut out = Map::new();
    for (f, v) in m.fields() {
        let jv = value(v);
        if jv.is_null() || jv == json!("") {
            continue;
        }
        // ObjectMeta.generation is a plain int64 with omitempty in Go: 0 means unset.
        if name.ends_with("meta.v1.ObjectMeta") && f.name() == "generation" && jv == json!(0) {
            continue;
        }
        // Go structs embedded with `json:",inline"` are fields in protobuf but flat in JSON
        // (Volume.volumeSource, SecretKeySelector.localObjectReference, ...).
        if INLINE.contains(&f.name()) {
            if let Value::Object(m) = jv {
                out.extend(m);
                continue;
            }
        }
        out.insert(json_name(name, f.name()), jv);
    }
    Value::Object(out)
}

fn value(v: &PValue) -> Value {
    match v {
        PValue::Bool(b) => json!(b),
        PValue::I32(i) => json!(i),
        PValue::I64(i) => json!(i),
        PValue::U32(i) => json!(i),
        PValue::U64(i) => json!(i),
        PValue::F32(f) => json!(f),
        PValue::F64(f) => json!(f),
        PValue::String(s) => json!(s),
        PValue::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        PValue::EnumNumber(n) => json!(n),
        PValue::Message(m) => message(m),
        PValue::List(l) => Value::Array(l.iter().map(value).collect()),
        PValue::Map(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        MapKey::String(s) => s.clone(),
                        MapKey::Bool(b) => b.to_string(),
                        MapKey::I32(i) => i.to_string(),
                        MapKey::I64(i) => i.to_string(),
                        MapKey::U32(i) => i.to_string(),
                        MapKey::U64(i) => i.to_string(),
                    };
                    (key, value(v))
                })
                .collect(),
        ),
    }
}
