//! HTTP routing of the Kubernetes API paths onto discovery, OpenAPI and the resource verbs.
//!
//! Contract followed: kube-apiserver's REST layout (`/api/v1/...`, `/apis/<g>/<v>/...`,
//! `namespaces/<ns>/<plural>[/<name>[/<subresource>]]`), verbs by method (GET get/list/
//! watch, POST create, PUT update, PATCH patch, DELETE delete/deletecollection), query
//! parameters `watch`, `resourceVersion`, `labelSelector`, `fieldSelector`, `timeoutSeconds`,
//! `sendInitialEvents`, `fieldManager`, `fieldValidation`, `force`, `dryRun`, JSON and YAML
//! bodies, `Warning: 299` headers, and 401 for any request without the admin client
//! certificate or a valid service-account token (k3s runs with anonymous auth off);
//! TokenRequest and TokenReview ([`authn_api`], tokens in [`super::satoken`]).
//! Left out: protobuf and CBOR bodies (415), `limit`/`continue` paging (everything is one
//! page), exec/attach/portforward/proxy/scale, impersonation, RBAC authorization (except
//! TokenReview's `system:auth-delegator`, the check Vault's Kubernetes auth depends on).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::admit::{FieldValidation, WriteCtx};
use super::objects::{self, Managed};
use super::registry::ResourceType;
use super::selectors::Selector;
use super::status::{ApiError, ApiResult};
use super::store::Store;
use super::{discovery, openapi, table, watch};

pub struct App {
    pub store: Arc<Store>,
    /// host:port clients reach us at (for `/api`'s serverAddressByClientCIDRs).
    pub server_addr: String,
}

/// Set per TLS connection: whether the client presented a certificate signed by our CA.
#[derive(Clone, Copy)]
pub struct Peer {
    pub authenticated: bool,
}

fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let mut r = (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response();
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(h) = format!("299 - \"{escaped}\"").parse() {
            r.headers_mut().append("warning", h);
        }
    }
    r
}

pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let authed = req
        .extensions()
        .get::<Peer>()
        .is_some_and(|p| p.authenticated);
    // Pods present service-account tokens (the kubelet's projected token, or a TokenRequest
    // token): JWTs this API server signed, checked as kube-apiserver does (satoken).
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .and_then(|t| super::satoken::review(&app.store, t.trim(), &[]).ok());
    let caller = match (authed, bearer) {
        (true, _) => Caller::Admin,
        (false, Some(u)) => Caller::ServiceAccount(u),
        (false, None) => return ApiError::unauthorized().into_response(),
    };
    let (parts, body) = req.into_parts();
    if let Some(r) = super::faults::intercept(
        &app.store.data_dir(),
        parts.method.as_str(),
        parts.uri.path(),
    )
    .await
    {
        return r;
    }
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let body = match axum::body::to_bytes(body, 256 << 20).await {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request(format!("reading body: {e}")).into_response(),
    };
    if let Some(r) = authn_api(
        &app,
        &caller,
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        &body,
    ) {
        return match r {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
    }
    match route(
        &app,
        &parts.method,
        parts.uri.path(),
        &query,
        &parts.headers,
        &body,
    ) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Who is calling: the admin client certificate (`system:masters`) or a service account.
pub enum Caller {
    Admin,
    ServiceAccount(super::satoken::User),
}

/// `POST /api/v1/namespaces/<ns>/serviceaccounts/<sa>/token` (TokenRequest) and
/// `POST /apis/authentication.k8s.io/v1/tokenreviews` (TokenReview); None for other paths.
/// kube-apiserver answers both with 201 and the object with its `status` filled in.
/// RBAC: TokenReview needs `create tokenreviews` (ClusterRole `system:auth-delegator`,
/// [`super::satoken::may_review`]); TokenRequest is allowed to every caller here (ESO's
/// chart grants `create serviceaccounts/token` to its controller; the lab has no RBAC).
fn authn_api(
    app: &App,
    caller: &Caller,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<ApiResult<Response>> {
    use super::satoken;
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    match segs.as_slice() {
        ["api", "v1", "namespaces", ns, "serviceaccounts", sa, "token"] => Some((|| {
            if *method != Method::POST {
                return Err(ApiError::method_not_allowed());
            }
            let req = if body.is_empty() {
                json!({})
            } else {
                decode(body, content_type)?
            };
            log_token_request(&app.store.data_dir(), ns, sa);
            let auds = audiences(&req["spec"]);
            let issued = satoken::issue(
                &app.store,
                ns,
                sa,
                &auds,
                req["spec"]["expirationSeconds"].as_i64(),
                None,
            )
            .map_err(|r| ApiError::new(r.code, r.reason, r.message))?;
            let exp = chrono::DateTime::from_timestamp(issued.expires, 0)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let v = json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": sa, "namespace": ns, "creationTimestamp": null},
                "spec": {"audiences": issued.audiences, "expirationSeconds": req["spec"]["expirationSeconds"].as_i64().unwrap_or(satoken::DEFAULT_EXPIRATION), "boundObjectRef": req["spec"]["boundObjectRef"]},
                "status": {"token": issued.token, "expirationTimestamp": exp}});
            Ok(json_response(StatusCode::CREATED, &v, &[]))
        })()),
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => Some((|| {
            if *method != Method::POST {
                return Err(ApiError::method_not_allowed());
            }
            if let Caller::ServiceAccount(u) = caller {
                if !satoken::may_review(&app.store, &u.namespace, &u.name) {
                    return Err(ApiError::new(403, "Forbidden", format!(
                        "tokenreviews.authentication.k8s.io is forbidden: User \"{}\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope",
                        u.username()
                    )).with_details(json!({"group": "authentication.k8s.io", "kind": "tokenreviews"})));
                }
            }
            let req = decode(body, content_type)?;
            let token = req["spec"]["token"].as_str().unwrap_or_default();
            if token.is_empty() {
                return Err(ApiError::new(422, "Invalid", "TokenReview.authentication.k8s.io \"\" is invalid: spec.token: Required value: token must not be empty"));
            }
            let auds = audiences(&req["spec"]);
            let status = match satoken::review(&app.store, token, &auds) {
                Ok(u) => {
                    json!({"authenticated": true, "user": u.user_info(), "audiences": u.audiences})
                }
                Err(e) => json!({"user": {}, "error": satoken::refusal(&e)}),
            };
            let v = json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": null}, "spec": req["spec"], "status": status});
            Ok(json_response(StatusCode::CREATED, &v, &[]))
        })()),
        _ => None,
    }
}

/// Whether Deployment `kube-system/metrics-server` is Available: the backend of the
/// aggregated metrics API ([`discovery::METRICS_GROUP`]).
fn metrics_server_available(app: &App) -> bool {
    app.store
        .lock()
        .get("apps", "deployments", "kube-system", "metrics-server")
        .is_some_and(|d| {
            d["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Available" && c["status"] == "True")
        })
}

/// `spec.audiences` of a TokenRequest or TokenReview.
fn audiences(spec: &Value) -> Vec<String> {
    spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect()
}

/// `<data dir>/lab/token-requests.log`: one line `<ns>/<sa>` per TokenRequest served (never
/// the token), so a test can tell whether a client asked for one (`rebox plan` must not).
pub fn token_request_log(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("lab/token-requests.log")
}

fn log_token_request(data_dir: &std::path::Path, ns: &str, sa: &str) {
    use std::io::Write;
    let path = token_request_log(data_dir);
    let written = std::fs::create_dir_all(path.parent().unwrap_or(data_dir)).and_then(|_| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{ns}/{sa}"))
    });
    if let Err(e) = written {
        eprintln!(
            "lab-k3s: recording a TokenRequest in {}: {e}",
            path.display()
        );
    }
}

fn route(
    app: &App,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v, &[]));
    let types = app.store.lock().types.clone();
    match segs.as_slice() {
        ["version"] => ok(discovery::version()),
        ["healthz"] | ["readyz"] | ["livez"] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => ok(discovery::api_versions(&app.server_addr)),
        ["api", "v1"] => {
            ok(discovery::resource_list(&types, "", "v1").ok_or_else(ApiError::not_found_path)?)
        }
        ["apis", discovery::METRICS_GROUP, discovery::METRICS_VERSION, ..]
            if !metrics_server_available(app) =>
        {
            Ok((StatusCode::SERVICE_UNAVAILABLE, "service unavailable\n").into_response())
        }
        ["apis", discovery::METRICS_GROUP, discovery::METRICS_VERSION] => {
            ok(discovery::metrics_resource_list())
        }
        ["apis"] => ok(discovery::api_group_list(&types)),
        ["apis", g] => ok(discovery::api_group(&types, g).ok_or_else(ApiError::not_found_path)?),
        ["apis", g, v] => {
            ok(discovery::resource_list(&types, g, v).ok_or_else(ApiError::not_found_path)?)
        }
        ["openapi", "v3"] => ok(openapi::index(&types)),
        ["openapi", "v3", rest @ ..] => {
            ok(openapi::document(&types, &rest.join("/")).ok_or_else(ApiError::not_found_path)?)
        }
        ["api", "v1", rest @ ..] => resource(app, &types, "", "v1", rest, method, q, headers, body),
        ["apis", g, v, rest @ ..] => resource(app, &types, g, v, rest, method, q, headers, body),
        _ => Err(ApiError::not_found_path()),
    }
}

fn find(types: &[ResourceType], group: &str, version: &str, plural: &str) -> Option<ResourceType> {
    types
        .iter()
        .find(|t| t.group == group && t.version == version && t.plural == plural)
        .cloned()
}

#[allow(clippy::too_many_arguments)]
fn resource(
    app: &App,
    types: &[ResourceType],
    group: &str,
    version: &str,
    rest: &[&str],
    method: &Method,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    // namespaces/<ns>/<plural>/... (but namespaces/<name>[/status] is the Namespace object)
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if find(types, group, version, plural).is_some_and(|t| t.namespaced) =>
        {
            let mut v = vec![*plural];
            v.extend_from_slice(tail);
            (Some(ns.to_string()), v)
        }
        other => (None, other.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(ApiError::not_found_path()),
    };
    let rt = find(types, group, version, plural).ok_or_else(ApiError::not_found_path)?;
    if rt.namespaced && ns.is_none() && (name.is_some() || *method != Method::GET) {
        return Err(ApiError::not_found_path());
    }
    let ns_key = if rt.namespaced {
        ns.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let as_table = table::wanted(accept);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    if *method == Method::PATCH
        && content_type.starts_with("application/apply-patch")
        && q.get("fieldManager").is_none_or(|m| m.is_empty())
    {
        return Err(ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
    }
    let mut ctx = WriteCtx {
        validation: FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?,
        warnings: vec![],
        dry_run,
        manager: q
            .get("fieldManager")
            .cloned()
            .unwrap_or_else(|| default_manager(headers)),
    };
    let store = &app.store;
    let qbool = |k: &str| q.get(k).is_some_and(|v| v == "1" || v == "true");
    let selector = || {
        Selector::parse(
            q.get("labelSelector").map(String::as_str),
            q.get("fieldSelector").map(String::as_str),
            &rt.kind,
        )
    };
    let done = |code: StatusCode, v: Value, ctx: &WriteCtx| -> ApiResult<Response> {
        let v = if as_table && v["kind"] != "Status" {
            table::table(&rt, std::slice::from_ref(&v), None, true)
        } else {
            v
        };
        Ok(json_response(code, &v, &ctx.warnings))
    };
    match (method.clone(), name, sub.as_deref()) {
        (Method::GET, None, None) => {
            let sel = selector()?;
            if qbool("watch") {
                return Ok(watch::serve(
                    store,
                    watch::WatchRequest {
                        rt: rt.clone(),
                        namespace: ns.clone(),
                        selector: sel,
                        resource_version: q.get("resourceVersion").cloned(),
                        send_initial_events: qbool("sendInitialEvents"),
                        timeout: q
                            .get("timeoutSeconds")
                            .and_then(|t| t.parse().ok())
                            .map(Duration::from_secs),
                        as_table,
                    },
                ));
            }
            let inner = store.lock();
            let items: Vec<Value> = inner
                .list(&rt.group, &rt.plural, ns.as_deref())
                .into_iter()
                .filter(|o| sel.matches(o))
                .collect();
            if as_table {
                return Ok(json_response(
                    StatusCode::OK,
                    &table::table(&rt, &items, Some(inner.rv), true),
                    &[],
                ));
            }
            let list = json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items});
            Ok(json_response(StatusCode::OK, &list, &[]))
        }
        (Method::POST, None, None) => {
            let obj = decode(body, content_type)?;
            let created = objects::create(&mut store.lock(), &rt, &ns_key, obj, &mut ctx)?;
            done(StatusCode::CREATED, created, &ctx)
        }
        (Method::DELETE, None, None) => {
            let sel = selector()?;
            let mut inner = store.lock();
            let mut deleted = vec![];
            for o in inner
                .list(&rt.group, &rt.plural, ns.as_deref())
                .into_iter()
                .filter(|o| sel.matches(o))
            {
                let n = o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let ons = o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                deleted.push(objects::delete(
                    &mut inner,
                    &rt,
                    &ons,
                    &n,
                    &Value::Null,
                    dry_run,
                )?);
            }
            let list = json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {"resourceVersion": inner.rv.to_string()}, "items": deleted});
            Ok(json_response(StatusCode::OK, &list, &[]))
        }
        (Method::GET, Some(n), None) => {
            let inner = store.lock();
            let o = inner
                .get(&rt.group, &rt.plural, &ns_key, &n)
                .cloned()
                .ok_or_else(|| ApiError::not_found(&rt, &n))?;
            done(StatusCode::OK, o, &ctx)
        }
        (Method::PUT, Some(n), None) => {
            let obj = decode(body, content_type)?;
            let o = objects::update(
                &mut store.lock(),
                &rt,
                &ns_key,
                &n,
                obj,
                &mut ctx,
                None,
                Managed::Update,
            )?;
            done(StatusCode::OK, o, &ctx)
        }
        (Method::PATCH, Some(n), None) => {
            let mut inner = store.lock();
            let existed = inner.get(&rt.group, &rt.plural, &ns_key, &n).is_some();
            let o = objects::patch(
                &mut inner,
                &rt,
                &ns_key,
                &n,
                body,
                content_type,
                &mut ctx,
                None,
                qbool("force"),
            )?;
            done(
                if existed {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                o,
                &ctx,
            )
        }
        (Method::DELETE, Some(n), None) => {
            let opts: Value = if body.is_empty() {
                Value::Null
            } else {
                decode(body, content_type)?
            };
            let o = objects::delete(&mut store.lock(), &rt, &ns_key, &n, &opts, dry_run)?;
            done(StatusCode::OK, o, &ctx)
        }
        (m, Some(n), Some("status")) if rt.status => {
            let mut inner = store.lock();
            let o = match m {
                Method::GET => inner
                    .get(&rt.group, &rt.plural, &ns_key, &n)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(&rt, &n))?,
                Method::PUT => objects::update(
                    &mut inner,
                    &rt,
                    &ns_key,
                    &n,
                    decode(body, content_type)?,
                    &mut ctx,
                    Some("status"),
                    Managed::Update,
                )?,
                Method::PATCH => objects::patch(
                    &mut inner,
                    &rt,
                    &ns_key,
                    &n,
                    body,
                    content_type,
                    &mut ctx,
                    Some("status"),
                    qbool("force"),
                )?,
                _ => return Err(ApiError::method_not_allowed()),
            };
            done(StatusCode::OK, o, &ctx)
        }
        (Method::GET, Some(n), Some("log")) if rt.group.is_empty() && rt.kind == "Pod" => {
            let inner = store.lock();
            let pod = inner
                .get("", "pods", &ns_key, &n)
                .cloned()
                .ok_or_else(|| ApiError::not_found(&rt, &n))?;
            match inner.pod_log(&ns_key, &n) {
                Some(text) => Ok(
                    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response(),
                ),
                None => {
                    let c = q
                        .get("container")
                        .cloned()
                        .or_else(|| {
                            pod["spec"]["containers"][0]["name"]
                                .as_str()
                                .map(String::from)
                        })
                        .unwrap_or_default();
                    Err(ApiError::bad_request(format!(
                        "container \"{c}\" in pod \"{n}\" is waiting to start: ContainerCreating"
                    )))
                }
            }
        }
        (_, Some(_), Some(_)) => Err(ApiError::not_found_path()),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// kube-apiserver's default field manager: the User-Agent up to the first '/'.
fn default_manager(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

fn decode(body: &[u8], content_type: &str) -> ApiResult<Value> {
    let ct = content_type.split(';').next().unwrap_or_default().trim();
    match ct {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        }),
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let text =
                std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
        }
        "application/vnd.kubernetes.protobuf" => super::protobuf::decode(body).map_err(|e| ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({e})"))),
        other => Err(ApiError::unsupported_media(other)),
    }
}
