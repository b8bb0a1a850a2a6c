//! HTTP surface of the Vault stand-in: Vault's paths, methods, status codes and bodies.
//!
//! Contract followed: `../shared/reference/platform-facts.md` §1 "General wire rules"
//! (`/v1/` prefix, `PUT` = `POST`, `X-Vault-Token` or `Authorization: Bearer`, errors as
//! `{"errors":[...]}`, 503 `Vault is sealed`, 204 for bodiless success, 405 `{"errors":[]}`),
//! and the endpoint sections `seal-status`, `unseal`, `init`, "Rekey" and `health`; where the
//! card is silent, upstream `http/sys_seal.go`, `http/sys_init.go`, `http/sys_rekey.go`,
//! `http/sys_health.go`. Request bodies are decoded with Go's `encoding/json` manners: field
//! names match case-insensitively, unknown fields are ignored, an empty body is `{}`, a
//! wrongly typed field is a 400.
//!
//! Served: `GET /v1/sys/seal-status`; `PUT|POST /v1/sys/unseal`; `GET|PUT|POST
//! /v1/sys/init`; `PUT|POST /v1/sys/seal` (root token); `GET|HEAD /v1/sys/health` (with
//! `sealedcode`, `uninitcode`, `activecode`, `standbyok`, … overrides); `GET|PUT|POST|DELETE
//! /v1/sys/rekey/init`; `PUT|POST /v1/sys/rekey/update`; `GET|PUT|POST|DELETE
//! /v1/sys/rekey/verify`. Any other `/v1/` path: 503 while sealed, else 403 without a valid
//! token, else 404. Paths outside `/v1/`: 404.
//!
//! Lab-only (not Vault; fault injection for tests): `POST /lab/seal` seals without a token,
//! as a crashed-and-restarted pod would be.
//!
//! Left out: every secrets engine and auth method, `sys/mounts`, `sys/generate-root`,
//! `sys/rekey/backup`, `sys/rekey-recovery-key/*`, `sys/step-down`, `sys/leader`, TLS (the lab
//! reaches it through a tunnel or loopback), request forwarding, response wrapping.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::core::{ApiError, ApiResult, Core, InitRequest, RekeyRequest, KEY_MAX, KEY_MIN};

pub type Shared = Arc<Mutex<Core>>;

/// The axum app for a core.
pub fn router(core: Shared) -> Router {
    Router::new().fallback(dispatch).with_state(core)
}

enum Reply {
    Json(u16, Value),
    NoContent,
    Head(u16),
}

fn ok(v: Value) -> ApiResult<Reply> {
    Ok(Reply::Json(200, v))
}

fn method_not_allowed() -> ApiResult<Reply> {
    Err(ApiError::empty(405))
}

async fn dispatch(
    State(core): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if !path.starts_with("/v1/") && !path.starts_with("/lab/") {
        return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    }
    let mut core = core.lock().unwrap_or_else(|p| p.into_inner());
    let result = route(&mut core, &method, &path, uri.query(), &headers, &body);
    drop(core);
    match result {
        Ok(Reply::Json(status, v)) => json_response(status, &v),
        Ok(Reply::NoContent) => with_vault_headers(
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Body::empty())
                .expect("static response"),
        ),
        Ok(Reply::Head(status)) => with_vault_headers(
            Response::builder()
                .status(status)
                .body(Body::empty())
                .expect("static response"),
        ),
        Err(e) => json_response(e.status, &json!({ "errors": e.errors })),
    }
}

fn with_vault_headers(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_response(status: u16, v: &Value) -> Response {
    let mut bytes = serde_json::to_vec(v).expect("JSON values serialise");
    bytes.push(b'\n');
    with_vault_headers(
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes))
            .expect("valid response"),
    )
}

fn is_update(m: &Method) -> bool {
    m == Method::PUT || m == Method::POST
}

fn route(
    core: &mut Core,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Reply> {
    match path {
        "/v1/sys/seal-status" => match *method {
            Method::GET => ok(core.seal_status()),
            _ => method_not_allowed(),
        },
        "/v1/sys/unseal" if is_update(method) => {
            let b = GoJson::parse(body, "UnsealRequest")?;
            if b.bool("reset")? {
                return ok(core.unseal_reset()?);
            }
            let key = b.string("key")?;
            if key.is_empty() {
                return Err(ApiError::new(
                    400,
                    "'key' must be specified in request body as JSON, or 'reset' set to true",
                ));
            }
            let key = decode_key(&key)?;
            ok(core.unseal(&key)?)
        }
        "/v1/sys/unseal" => method_not_allowed(),
        "/v1/sys/init" => match *method {
            Method::GET => ok(json!({ "initialized": core.initialized() })),
            Method::PUT | Method::POST => {
                let b = GoJson::parse(body, "InitRequest")?;
                let req = InitRequest {
                    secret_shares: b.int("secret_shares")?,
                    secret_threshold: b.int("secret_threshold")?,
                    stored_shares: b.int("stored_shares")?,
                    pgp_keys: b.strings("pgp_keys")?,
                    root_token_pgp_key: b.string("root_token_pgp_key")?,
                    recovery_shares: b.int("recovery_shares")?,
                    recovery_threshold: b.int("recovery_threshold")?,
                    recovery_pgp_keys: b.strings("recovery_pgp_keys")?,
                };
                ok(core.init(&req)?)
            }
            _ => method_not_allowed(),
        },
        "/v1/sys/seal" if is_update(method) => {
            core.seal(&token(headers))?;
            Ok(Reply::NoContent)
        }
        "/v1/sys/seal" => method_not_allowed(),
        "/v1/sys/health" => match *method {
            Method::GET => {
                let (status, v) = health(core, query)?;
                Ok(Reply::Json(status, v))
            }
            Method::HEAD => {
                let (status, _) = health(core, query)?;
                Ok(Reply::Head(status))
            }
            _ => method_not_allowed(),
        },
        "/v1/sys/rekey/init" => match *method {
            Method::GET => ok(core.rekey_status()?),
            Method::PUT | Method::POST => {
                let b = GoJson::parse(body, "RekeyRequest")?;
                let req = RekeyRequest {
                    secret_shares: b.int("secret_shares")?,
                    secret_threshold: b.int("secret_threshold")?,
                    stored_shares: b.int("stored_shares")?,
                    pgp_keys: b.strings("pgp_keys")?,
                    backup: b.bool("backup")?,
                    require_verification: b.bool("require_verification")?,
                };
                ok(core.rekey_init(&req)?)
            }
            Method::DELETE => {
                let b = GoJson::parse(body, "RekeyDeleteRequest")?;
                core.rekey_cancel(&b.string("nonce")?)?;
                Ok(Reply::NoContent)
            }
            _ => method_not_allowed(),
        },
        "/v1/sys/rekey/update" if is_update(method) => {
            let b = GoJson::parse(body, "RekeyUpdateRequest")?;
            let key = b.string("key")?;
            if key.is_empty() {
                return Err(ApiError::new(
                    400,
                    "'key' must be specified in request body as JSON",
                ));
            }
            let key = decode_key(&key)?;
            match core.rekey_update(&key, &b.string("nonce")?)? {
                Some(done) => ok(done),
                None => ok(core.rekey_status()?),
            }
        }
        "/v1/sys/rekey/update" => method_not_allowed(),
        "/v1/sys/rekey/verify" => match *method {
            Method::GET => ok(core.verify_status()?),
            Method::DELETE => ok(core.verify_restart()?),
            Method::PUT | Method::POST => {
                let b = GoJson::parse(body, "RekeyVerificationUpdateRequest")?;
                let key = b.string("key")?;
                if key.is_empty() {
                    return Err(ApiError::new(
                        400,
                        "'key' must be specified in request body as JSON",
                    ));
                }
                let key = decode_key(&key)?;
                match core.verify_update(&key, &b.string("nonce")?)? {
                    Some(done) => ok(done),
                    None => ok(core.verify_status()?),
                }
            }
            _ => method_not_allowed(),
        },
        // ---- lab-only fault injection, not part of Vault's API ----
        "/lab/seal" if *method == Method::POST => {
            core.seal_now();
            Ok(Reply::NoContent)
        }
        p if p.starts_with("/lab/") => Err(ApiError::new(404, "lab-vault: unknown lab path")),
        // ---- everything else Vault would route to a backend ----
        p => {
            if core.sealed() {
                return Err(ApiError::sealed());
            }
            if !core.token_valid(&token(headers)) {
                return Err(ApiError::permission_denied());
            }
            let rel = p.trim_start_matches("/v1/");
            if rel.starts_with("sys/") {
                Err(ApiError::new(404, "unsupported path"))
            } else {
                Err(ApiError::new(
                    404,
                    format!("no handler for route {rel:?}. route entry not found."),
                ))
            }
        }
    }
}

/// The client token: `X-Vault-Token`, else `Authorization: Bearer`.
fn token(headers: &HeaderMap) -> String {
    if let Some(t) = headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        return t.trim().to_string();
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

/// Hex first (kept only if the length is a plausible share length), else standard base64,
/// as `http/sys_seal.go` and `http/sys_rekey.go` decode keys.
fn decode_key(s: &str) -> ApiResult<Vec<u8>> {
    if let Ok(k) = hex::decode(s) {
        if (KEY_MIN..=KEY_MAX).contains(&k.len()) {
            return Ok(k);
        }
    }
    // Go's StdEncoding: padding required, stray trailing bits tolerated.
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    engine
        .decode(s)
        .map_err(|_| ApiError::new(400, "'key' must be a valid hex or base64 string"))
}

/// `GET|HEAD /sys/health` (`http/sys_health.go` `getSysHealth`).
fn health(core: &Core, query: Option<&str>) -> ApiResult<(u16, Value)> {
    let params: Vec<(String, String)> = query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    for flag in ["standbyok", "perfstandbyok"] {
        if let Some(v) = param(flag) {
            parse_go_bool(&v).ok_or_else(|| {
                ApiError::new(
                    400,
                    format!("bad value for {flag} parameter: strconv.ParseBool: parsing {v:?}: invalid syntax"),
                )
            })?;
        }
    }
    let code = |name: &str, default: u16| -> ApiResult<u16> {
        match param(name) {
            None => Ok(default),
            Some(v) => v.parse::<u16>().map_err(|_| ApiError::empty(400)),
        }
    };
    let active = code("activecode", 200)?;
    let sealed_code = code("sealedcode", 503)?;
    let uninit = code("uninitcode", 501)?;
    for other in [
        "standbycode",
        "drsecondarycode",
        "performancestandbycode",
        "removedcode",
        "haunhealthycode",
    ] {
        code(other, 0)?;
    }
    let initialized = core.initialized();
    let sealed = core.sealed();
    let status = if !initialized {
        uninit
    } else if sealed {
        sealed_code
    } else {
        active
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut body = json!({
        "initialized": initialized,
        "sealed": sealed,
        "standby": sealed,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": now,
        "version": super::core::VERSION,
        "enterprise": false,
        "echo_duration_ms": 0,
        "clock_skew_ms": 0,
        "replication_primary_canary_age_ms": 0,
    });
    if let Some((name, id)) = core.cluster() {
        body["cluster_name"] = json!(name);
        body["cluster_id"] = json!(id);
    }
    Ok((status, body))
}

fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A JSON request body read the way Vault's Go handlers read it.
struct GoJson {
    fields: Map<String, Value>,
    type_name: &'static str,
}

impl GoJson {
    fn parse(body: &[u8], type_name: &'static str) -> ApiResult<GoJson> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(GoJson {
                fields: Map::new(),
                type_name,
            });
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::new(400, format!("failed to parse JSON input: {e}")))?;
        match v {
            Value::Object(fields) => Ok(GoJson { fields, type_name }),
            Value::Null => Ok(GoJson {
                fields: Map::new(),
                type_name,
            }),
            other => Err(ApiError::new(
                400,
                format!(
                    "failed to parse JSON input: json: cannot unmarshal {} into Go value of type http.{}",
                    go_kind(&other),
                    type_name
                ),
            )),
        }
    }

    /// Exact name first, then Go's case-insensitive match.
    fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name).or_else(|| {
            self.fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    }

    fn type_error(&self, name: &str, v: &Value, go_type: &str) -> ApiError {
        ApiError::new(
            400,
            format!(
                "failed to parse JSON input: json: cannot unmarshal {} into Go struct field {}.{} of type {}",
                go_kind(v),
                self.type_name,
                name,
                go_type
            ),
        )
    }

    fn string(&self, name: &str) -> ApiResult<String> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.type_error(name, v, "string")),
        }
    }

    fn bool(&self, name: &str) -> ApiResult<bool> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.type_error(name, v, "bool")),
        }
    }

    fn int(&self, name: &str) -> ApiResult<i64> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| self.type_error(name, &Value::Number(n.clone()), "int")),
            Some(v) => Err(self.type_error(name, v, "int")),
        }
    }

    fn strings(&self, name: &str) -> ApiResult<Vec<String>> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.type_error(name, other, "string")),
                })
                .collect(),
            Some(v) => Err(self.type_error(name, v, "[]string")),
        }
    }
}

fn go_kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) => format!("number {n}"),
        Value::String(_) => "string".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &json!({ "errors": self.errors }))
    }
}
