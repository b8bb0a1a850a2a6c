//! Store helpers for the controllers that address objects by group and plural (Longhorn,
//! ESO, Argo CD, the PV binder): get/list/create/modify/delete, conditions, and the
//! once-per-store guard. Each write goes through the API server's own create/update code
//! (validation, managedFields, events), as the API verbs do.
//!
//! Kept apart from `longhorn.rs`, where it started, so the controllers that use it do not
//! depend on the Longhorn stand-in.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::ctx;
use crate::k3s::defaults::now;
use crate::k3s::objects;
use crate::k3s::registry::ResourceType;
use crate::k3s::status::ApiError;
use crate::k3s::store::Store;

pub fn rt(store: &Store, group: &str, plural: &str) -> Option<ResourceType> {
    let inner = store.lock();
    inner
        .types
        .iter()
        .find(|t| t.group == group && t.plural == plural)
        .cloned()
}

pub fn get(store: &Store, group: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
    store.lock().get(group, plural, ns, name).cloned()
}

pub fn list(store: &Store, group: &str, plural: &str, ns: Option<&str>) -> Vec<Value> {
    store.lock().list(group, plural, ns)
}

pub fn create(
    store: &Store,
    group: &str,
    plural: &str,
    ns: &str,
    obj: Value,
    manager: &str,
) -> Result<Value, ApiError> {
    let rt = rt(store, group, plural)
        .ok_or_else(|| ApiError::bad_request(format!("{plural}.{group} is not served")))?;
    let mut inner = store.lock();
    objects::create(&mut inner, &rt, ns, obj, &mut ctx(manager))
}

/// Read-modify-write under the store lock: `f` edits the object (return false to skip);
/// `sub` = Some("status") writes the status subresource. Ok(None) when the object is gone.
#[allow(clippy::too_many_arguments)]
pub fn modify(
    store: &Store,
    group: &str,
    plural: &str,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    manager: &str,
    f: impl FnOnce(&mut Value) -> bool,
) -> Result<Option<Value>, ApiError> {
    let rt = rt(store, group, plural)
        .ok_or_else(|| ApiError::bad_request(format!("{plural}.{group} is not served")))?;
    let mut inner = store.lock();
    let Some(mut o) = inner.get(group, plural, ns, name).cloned() else {
        return Ok(None);
    };
    let before = o.clone();
    if !f(&mut o) || o == before {
        return Ok(Some(before));
    }
    objects::update(
        &mut inner,
        &rt,
        ns,
        name,
        o,
        &mut ctx(manager),
        sub,
        objects::Managed::Update,
    )
    .map(Some)
}

pub fn delete(store: &Store, group: &str, plural: &str, ns: &str, name: &str) {
    if let Some(rt) = rt(store, group, plural) {
        let mut inner = store.lock();
        let _ = objects::delete(&mut inner, &rt, ns, name, &Value::Null, false);
    }
}

/// Sets condition `ty` in `conds` (an array), keeping `lastTransitionTime` unless the
/// status changes.
pub fn set_condition(conds: &mut Value, ty: &str, status: &str, reason: &str, message: &str) {
    if !conds.is_array() {
        *conds = json!([]);
    }
    let arr = conds.as_array_mut().expect("array");
    let t = now();
    if let Some(c) = arr.iter_mut().find(|c| c["type"] == ty) {
        if c["status"] != status {
            c["lastTransitionTime"] = json!(t);
        }
        c["status"] = json!(status);
        c["reason"] = json!(reason);
        c["message"] = json!(message);
    } else {
        arr.push(
            json!({"type": ty, "status": status, "reason": reason, "message": message,
                        "lastProbeTime": "", "lastTransitionTime": t}),
        );
    }
}

/// True the first time `controller` is claimed for this store: spawning a controller
/// twice on one store (a test and `spawn_all`) would run two restores of one volume.
pub fn claim_once(store: &Arc<Store>, controller: &'static str) -> bool {
    static CLAIMED: Mutex<Vec<(std::sync::Weak<Store>, &'static str)>> = Mutex::new(vec![]);
    let mut c = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    c.retain(|(w, _)| w.strong_count() > 0);
    if c.iter()
        .any(|(w, n)| *n == controller && w.upgrade().is_some_and(|s| Arc::ptr_eq(&s, store)))
    {
        return false;
    }
    c.push((Arc::downgrade(store), controller));
    true
}

pub fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}
