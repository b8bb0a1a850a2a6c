//! The write verbs on one object: create, update (main resource or `/status`), patch (merge,
//! JSON, strategic, apply) and delete, each run under the store lock so that
//! resourceVersion checks and writes are atomic.
//!
//! Contract followed: kube-apiserver's generic registry (`rest.BeforeCreate/BeforeUpdate`):
//! 404 for a missing namespace or object, 409 AlreadyExists, 409 Conflict for a stale
//! `metadata.resourceVersion`, status ignored on the main resource when a status
//! subresource exists (and everything but status ignored on `/status`), `generation` bumped
//! on spec changes, no-op updates keep their resourceVersion, finalizers delay deletion
//! (`deletionTimestamp` set), deleting a Namespace deletes its contents (finalization is
//! immediate), deleting a CRD deletes its custom resources, `dryRun=All` writes nothing.
//! Left out: garbage collection by ownerReferences (part 2), graceful pod termination,
//! `AllowCreateOnUpdate` kinds (PUT to a missing object is 404 for every kind).

use serde_json::{json, Value};

use super::admit::{self, admit, admit_partial, WriteCtx};
use super::defaults::{self, new_uid, now, random_suffix};
use super::immutable;
use super::patch;
use super::registry::ResourceType;
use super::ssa;
use super::status::{ApiError, ApiResult};
use super::store::Inner;

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::new(
        500,
        "InternalError",
        format!("Internal error occurred: {e:#}"),
    )
}

fn ensure_namespace(inner: &Inner, rt: &ResourceType, ns: &str) -> ApiResult<()> {
    if rt.namespaced && inner.get("", "namespaces", "", ns).is_none() {
        return Err(ApiError::namespace_not_found(ns));
    }
    Ok(())
}

fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

fn commit(
    inner: &mut Inner,
    rt: &ResourceType,
    ns: &str,
    obj: Value,
    ctx: &WriteCtx,
) -> ApiResult<Value> {
    if ctx.dry_run {
        return Ok(obj);
    }
    let out = inner
        .put(&rt.group, &rt.plural, ns, obj)
        .map_err(internal)?;
    if rt.group == "apiextensions.k8s.io" && rt.kind == "CustomResourceDefinition" {
        inner.register_crd(&out);
    }
    // Every committed Namespace, whether POSTed or server-side applied (apply() commits the
    // object create() only dry-ran), gets its `default` ServiceAccount.
    if rt.group.is_empty()
        && rt.kind == "Namespace"
        && out["metadata"]["deletionTimestamp"].is_null()
    {
        let name = out["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ensure_default_service_account(inner, &name);
    }
    Ok(out)
}

pub fn create(
    inner: &mut Inner,
    rt: &ResourceType,
    ns: &str,
    mut body: Value,
    ctx: &mut WriteCtx,
) -> ApiResult<Value> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the request body",
        ));
    }
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    if rt.namespaced {
        match body["metadata"]["namespace"].as_str() {
            Some(bns) if !bns.is_empty() && bns != ns => {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            _ => body["metadata"]["namespace"] = json!(ns),
        }
    } else if let Some(m) = body["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    let name_empty = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .is_empty();
    if name_empty {
        if let Some(g) = body["metadata"]["generateName"]
            .as_str()
            .filter(|g| !g.is_empty())
        {
            body["metadata"]["name"] = json!(format!("{g}{}", random_suffix()));
        }
    }
    // Decoding errors (400) come before the namespace check (404), which comes before
    // validation (422), as in kube-apiserver (decode, admission, strategy validation).
    let mut probe = WriteCtx {
        validation: ctx.validation,
        warnings: vec![],
        dry_run: true,
        manager: String::new(),
    };
    admit_partial(inner, rt, body.clone(), &mut probe)?;
    ensure_namespace(inner, rt, ns)?;
    let mut obj = admit(inner, rt, body, ctx)?;
    super::webhooks::check(inner, rt)?;
    if rt.group.is_empty() && rt.kind == "Pod" {
        admit_service_account(inner, ns, &mut obj)?;
    }
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if inner.get(&rt.group, &rt.plural, ns, &name).is_some() {
        return Err(ApiError::already_exists(rt, &name));
    }
    if rt.status && !(rt.group.is_empty() && rt.kind == "Node") {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    let uid = new_uid();
    if rt.group.is_empty() && rt.kind == "Service" {
        allocate_cluster_ip(inner, &mut obj);
    }
    defaults::on_write(rt, &mut obj);
    defaults::on_create(rt, &mut obj, &uid);
    let meta = obj["metadata"].as_object_mut().expect("metadata");
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "managedFields",
    ] {
        meta.remove(k);
    }
    meta.insert("uid".into(), json!(uid));
    meta.insert("creationTimestamp".into(), json!(now()));
    if rt.has_generation() {
        meta.insert("generation".into(), json!(1));
    }
    ssa::record_update(None, &mut obj, &ctx.manager, rt.crd.is_none(), None);
    commit(inner, rt, ns, obj, ctx)
}

/// kube-apiserver's `ServiceAccount` admission plugin
/// (`plugin/pkg/admission/serviceaccount/admission.go`): a pod without
/// `spec.serviceAccountName` gets `default`; a pod whose ServiceAccount does not exist is
/// refused (403 `error looking up service account NS/SA: serviceaccount "SA" not found`).
/// Left out: the plugin's injection of the `kube-api-access-*` volume into the spec (the
/// lab's kubelet mounts the token without it).
fn admit_service_account(inner: &Inner, ns: &str, pod: &mut Value) -> ApiResult<()> {
    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            pod["spec"]["serviceAccount"]
                .as_str()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
        .to_string();
    pod["spec"]["serviceAccountName"] = json!(sa);
    pod["spec"]["serviceAccount"] = json!(sa);
    if inner.get("", "serviceaccounts", ns, &sa).is_none() {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!("pods \"{name}\" is forbidden: error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found"),
        )
        .with_details(json!({"name": name, "kind": "pods"})));
    }
    Ok(())
}

/// kube-controller-manager's serviceaccounts-controller: every namespace has a ServiceAccount
/// `default` (`pkg/controller/serviceaccount/serviceaccounts_controller.go`, skipped for a
/// terminating namespace). Upstream creates it moments after the namespace; here in the same
/// write, so no pod races it (the lab's controllers create pods right after namespaces).
pub fn ensure_default_service_account(inner: &mut Inner, ns: &str) {
    if ns.is_empty() || inner.get("", "serviceaccounts", ns, "default").is_some() {
        return;
    }
    let Some(rt) = inner
        .types
        .iter()
        .find(|t| t.group.is_empty() && t.kind == "ServiceAccount")
        .cloned()
    else {
        return;
    };
    let mut ctx = WriteCtx {
        validation: super::admit::FieldValidation::Strict,
        warnings: vec![],
        dry_run: false,
        manager: "kube-controller-manager".into(),
    };
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
    if let Err(e) = create(inner, &rt, ns, sa, &mut ctx) {
        eprintln!(
            "lab-k3s serviceaccounts-controller: {ns}/default: {}",
            e.message
        );
    }
}

/// How managedFields are maintained by [`update`].
pub enum Managed {
    /// A non-apply write by the manager in the request context.
    Update,
    /// Already computed (server-side apply).
    Computed,
}

#[allow(clippy::too_many_arguments)]
pub fn update(
    inner: &mut Inner,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    mut body: Value,
    ctx: &mut WriteCtx,
    sub: Option<&str>,
    managed: Managed,
) -> ApiResult<Value> {
    let old = inner
        .get(&rt.group, &rt.plural, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the request body",
        ));
    }
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    match body["metadata"]["name"].as_str() {
        Some(n) if !n.is_empty() && n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => body["metadata"]["name"] = json!(name),
    }
    if rt.namespaced {
        match body["metadata"]["namespace"].as_str() {
            Some(bns) if !bns.is_empty() && bns != ns => {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            _ => body["metadata"]["namespace"] = json!(ns),
        }
    }
    if let Some(rv) = body["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        if Some(rv) != old["metadata"]["resourceVersion"].as_str() {
            return Err(ApiError::conflict(rt, name));
        }
    }
    if let Some(uid) = body["metadata"]["uid"].as_str().filter(|s| !s.is_empty()) {
        if Some(uid) != old["metadata"]["uid"].as_str() {
            return Err(ApiError::conflict(rt, name).with_message(format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                old["metadata"]["uid"].as_str().unwrap_or_default()
            )));
        }
    }
    let mut obj = admit(inner, rt, body, ctx)?;
    if sub.is_none() {
        super::webhooks::check(inner, rt)?;
    }
    match sub {
        Some("status") => {
            let status = obj.get("status").cloned();
            obj = old.clone();
            match status {
                Some(s) => obj["status"] = s,
                None => {
                    obj.as_object_mut().expect("object").remove("status");
                }
            }
        }
        _ if rt.status => match old.get("status") {
            Some(s) => obj["status"] = s.clone(),
            None => {
                obj.as_object_mut().expect("object").remove("status");
            }
        },
        _ => {}
    }
    defaults::on_write(rt, &mut obj);
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old["metadata"].get(k) {
            Some(v) => obj["metadata"][k] = v.clone(),
            None => {
                obj["metadata"].as_object_mut().expect("metadata").remove(k);
            }
        }
    }
    obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    if sub.is_none() {
        // A Service that kept its address: an update that omits clusterIP keeps it.
        if rt.group.is_empty()
            && rt.kind == "Service"
            && obj["spec"]["clusterIP"].is_null()
            && old["spec"]["clusterIP"].is_string()
        {
            obj["spec"]["clusterIP"] = old["spec"]["clusterIP"].clone();
            obj["spec"]["clusterIPs"] = old["spec"]["clusterIPs"].clone();
        }
        let causes = immutable::check(rt, &old, &obj);
        if !causes.is_empty() {
            return Err(ApiError::invalid(rt, name, causes));
        }
    }
    if rt.has_generation() && spec_part(&obj) != spec_part(&old) {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        obj["metadata"]["generation"] = json!(g);
    }
    match managed {
        Managed::Update => {
            obj["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
            if obj["metadata"]["managedFields"].is_null() {
                obj["metadata"]
                    .as_object_mut()
                    .expect("metadata")
                    .remove("managedFields");
            }
            ssa::record_update(Some(&old), &mut obj, &ctx.manager, rt.crd.is_none(), sub);
        }
        Managed::Computed => {}
    }
    if without_times(&obj) == without_times(&old) {
        return Ok(old);
    }
    if !obj["metadata"]["deletionTimestamp"].is_null()
        && obj["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty())
    {
        if ctx.dry_run {
            return Ok(obj);
        }
        return inner
            .remove(&rt.group, &rt.plural, ns, name)
            .map_err(internal)
            .map(|o| o.unwrap_or(obj));
    }
    commit(inner, rt, ns, obj, ctx)
}

fn without_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(mf) = v["metadata"]["managedFields"].as_array_mut() {
        for e in mf {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
    }
    v
}

trait WithMessage {
    fn with_message(self, m: String) -> Self;
}
impl WithMessage for ApiError {
    fn with_message(mut self, m: String) -> Self {
        self.message = m;
        self
    }
}

/// PATCH with `content_type`; `force` only matters for apply.
#[allow(clippy::too_many_arguments)]
pub fn patch(
    inner: &mut Inner,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    body: &[u8],
    content_type: &str,
    ctx: &mut WriteCtx,
    sub: Option<&str>,
    force: bool,
) -> ApiResult<Value> {
    let ct = content_type.split(';').next().unwrap_or_default().trim();
    if ct == "application/apply-patch+yaml" || ct == "application/apply-patch+cbor" {
        return apply(inner, rt, ns, name, body, ctx, sub, force);
    }
    let p: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let old = inner
        .get(&rt.group, &rt.plural, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    let new = match ct {
        "application/merge-patch+json" => patch::merge(&old, &p),
        "application/json-patch+json" => patch::json(&old, &p).map_err(|e| {
            ApiError::new(
                422,
                "Invalid",
                format!("the server rejected our request due to an error in our request: {e}"),
            )
        })?,
        "application/strategic-merge-patch+json" => {
            if rt.crd.is_some() {
                return Err(ApiError::new(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"));
            }
            patch::strategic(&old, &p).map_err(ApiError::bad_request)?
        }
        other => {
            return Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})")));
        }
    };
    update(inner, rt, ns, name, new, ctx, sub, Managed::Update)
}

#[allow(clippy::too_many_arguments)]
fn apply(
    inner: &mut Inner,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    body: &[u8],
    ctx: &mut WriteCtx,
    sub: Option<&str>,
    force: bool,
) -> ApiResult<Value> {
    if ctx.manager.is_empty() || ctx.manager == "unknown" {
        return Err(ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
    }
    let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let applied: Value = serde_saphyr::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the request body",
        ));
    }
    let n = applied["metadata"]["name"].as_str().unwrap_or_default();
    if !n.is_empty() && n != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    // The applied configuration must convert to the kind's schema. An undeclared field fails
    // the typed conversion whatever fieldValidation says, and kube-apiserver reports that as
    // a plain error: HTTP 500 without a reason (kubernetes/kubernetes#122480, #139253).
    let mut probe = applied.clone();
    probe["metadata"]["name"] = json!(name);
    let (_, unknown) = admit::decode(inner, rt, probe.clone(), true)?;
    if !unknown.is_empty() {
        let errs: Vec<String> = unknown
            .iter()
            .map(|p| format!(".{p}: field not declared in schema"))
            .collect();
        let detail = if errs.len() == 1 {
            errs[0].clone()
        } else {
            format!("errors:\n  {}", errs.join("\n  "))
        };
        let gv = if rt.group.is_empty() {
            format!("/{}", rt.version)
        } else {
            rt.api_version()
        };
        let nn = if rt.namespaced {
            format!("{ns}/{name}")
        } else {
            format!("/{name}")
        };
        return Err(ApiError {
            code: 500,
            reason: "",
            message: format!(
                "failed to create typed patch object ({nn}; {gv}, Kind={}): {detail}",
                rt.kind
            ),
            details: None,
        });
    }
    let mut applied = admit_partial(inner, rt, probe, ctx)?;
    if rt.namespaced {
        applied["metadata"]["namespace"] = json!(ns);
    }
    let current = inner.get(&rt.group, &rt.plural, ns, name).cloned();
    let with_status = sub == Some("status") || !rt.status;
    let merged = ssa::apply(current.as_ref(), &applied, &ctx.manager, force, rt.crd.is_none(), with_status).map_err(|c| {
        let causes: Vec<Value> = c
            .iter()
            .map(|(m, v, p)| json!({"type": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {v}"), "field": p}))
            .collect();
        ApiError::new(409, "Conflict", ssa::conflict_message(&c)).with_details(json!({"causes": causes}))
    })?;
    match current {
        None => {
            let mf = merged["metadata"]["managedFields"].clone();
            let mut obj = create(
                inner,
                rt,
                ns,
                merged,
                &mut WriteCtx {
                    validation: ctx.validation,
                    warnings: vec![],
                    dry_run: true,
                    manager: ctx.manager.clone(),
                },
            )?;
            obj["metadata"]["managedFields"] = mf;
            if ctx.dry_run {
                return Ok(obj);
            }
            commit(inner, rt, ns, obj, ctx)
        }
        Some(_) => update(inner, rt, ns, name, merged, ctx, sub, Managed::Computed),
    }
}

/// DELETE of one object; `options` is the DeleteOptions body (or null).
pub fn delete(
    inner: &mut Inner,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    options: &Value,
    dry_run: bool,
) -> ApiResult<Value> {
    let old = inner
        .get(&rt.group, &rt.plural, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    let pre = &options["preconditions"];
    if let Some(rv) = pre["resourceVersion"].as_str() {
        if Some(rv) != old["metadata"]["resourceVersion"].as_str() {
            return Err(ApiError::conflict(rt, name));
        }
    }
    if let Some(uid) = pre["uid"].as_str() {
        if Some(uid) != old["metadata"]["uid"].as_str() {
            return Err(ApiError::conflict(rt, name));
        }
    }
    if dry_run {
        return Ok(old);
    }
    let finalizers = old["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    if finalizers && !(rt.group.is_empty() && rt.kind == "Namespace") {
        if !old["metadata"]["deletionTimestamp"].is_null() {
            return Ok(old);
        }
        let mut obj = old.clone();
        obj["metadata"]["deletionTimestamp"] = json!(now());
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        return inner.put(&rt.group, &rt.plural, ns, obj).map_err(internal);
    }
    if rt.group.is_empty() && rt.kind == "Namespace" {
        for (g, plural) in inner.resources_in_namespace(name) {
            for o in inner.list(&g, &plural, Some(name)) {
                let n = o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                inner.remove(&g, &plural, name, &n).map_err(internal)?;
            }
        }
    }
    if rt.group == "apiextensions.k8s.io" && rt.kind == "CustomResourceDefinition" {
        let g = old["spec"]["group"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let plural = old["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for o in inner.list(&g, &plural, None) {
            let n = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let ons = o["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            inner.remove(&g, &plural, &ons, &n).map_err(internal)?;
        }
    }
    let mut gone = inner
        .remove(&rt.group, &rt.plural, ns, name)
        .map_err(internal)?
        .unwrap_or(old);
    if rt.group.is_empty() && rt.kind == "Namespace" {
        gone["status"]["phase"] = json!("Terminating");
        gone["metadata"]["deletionTimestamp"] = json!(now());
    }
    Ok(gone)
}

/// Gives a new Service an address from k3s's service CIDR 10.43.0.0/16 (10.43.0.1 is the
/// `kubernetes` Service), unless it is headless, an ExternalName, or asked for one.
fn allocate_cluster_ip(inner: &Inner, obj: &mut Value) {
    let spec = &obj["spec"];
    if spec["type"] == "ExternalName" || spec["clusterIP"].as_str().is_some_and(|s| !s.is_empty()) {
        if let Some(ip) = spec["clusterIP"].as_str() {
            let ip = ip.to_string();
            obj["spec"]["clusterIPs"] = json!([ip]);
        }
        return;
    }
    let used: std::collections::HashSet<String> = inner
        .list("", "services", None)
        .iter()
        .filter_map(|s| s["spec"]["clusterIP"].as_str().map(String::from))
        .collect();
    let ip = (10u32..65534)
        .map(|n| format!("10.43.{}.{}", n / 256, n % 256))
        .find(|ip| !used.contains(ip) && !ip.ends_with(".0") && !ip.ends_with(".255"))
        .unwrap_or_else(|| "10.43.255.254".into());
    obj["spec"]["clusterIP"] = json!(ip);
    obj["spec"]["clusterIPs"] = json!([ip]);
}
