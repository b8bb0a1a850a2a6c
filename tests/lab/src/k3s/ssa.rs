//! Field ownership: `metadata.managedFields` (FieldsV1) for updates and server-side apply.
//!
//! Contract followed: "Server-Side Apply" (kubernetes.io/docs/reference/using-api/server-side-apply):
//! every write records which manager owns which fields (operation `Update` or `Apply`); an
//! apply that changes a field owned by another manager fails with 409 Conflict
//! (`Apply failed with N conflict(s)`, causes of type `FieldManagerConflict`) unless
//! `force=true`, which moves ownership; fields a manager applied before and omits now are
//! removed unless another manager owns them; equal values are co-owned.
//! Lists: for built-in kinds the usual associative lists (containers, env, volumes, ... by
//! `name`; volumeMounts by `mountPath`; ports by `containerPort`/`port`; conditions by
//! `type`) merge by key; every other list, and every list of custom resources, is atomic.
//! Left out: `x-kubernetes-list-type`/`map-keys` from CRD schemas, sets (`v:`), the
//! client-side-apply → server-side-apply migration of kubectl, per-subresource entries.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::defaults::now;

/// A path of FieldsV1 elements: `f:spec`, `k:{"name":"c"}`.
pub type FieldPath = Vec<String>;
pub type FieldSet = BTreeSet<FieldPath>;

#[derive(Clone, Debug)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub set: FieldSet,
}

/// One conflict: (manager, its apiVersion, the field path as `.spec.replicas`).
pub type Conflict = (String, String, String);

const IGNORED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

fn list_key(field: &str, items: &[Value], typed: bool) -> Option<&'static str> {
    if !typed || items.is_empty() || !items.iter().all(Value::is_object) {
        return None;
    }
    let key = match field {
        "volumeMounts" | "volumeDevices" => "mountPath",
        "conditions" => "type",
        "ports" if items.iter().all(|i| i.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "hostAliases" => {
            if field == "hostAliases" {
                "ip"
            } else {
                "name"
            }
        }
        _ => return None,
    };
    items.iter().all(|i| i.get(key).is_some()).then_some(key)
}

fn item_elem(key: &str, item: &Value) -> String {
    format!("k:{}", json!({ key: item[key] }))
}

/// The fields set in `obj` (leaves and associative-list items).
pub fn field_set(obj: &Value, typed: bool, with_status: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else { return out };
    for (k, v) in m {
        match k.as_str() {
            "apiVersion" | "kind" => continue,
            "status" if !with_status => continue,
            "metadata" => {
                for (mk, mv) in v.as_object().into_iter().flatten() {
                    if IGNORED_META.contains(&mk.as_str()) || mv.is_null() {
                        continue;
                    }
                    walk(
                        mv,
                        mk,
                        vec!["f:metadata".into(), format!("f:{mk}")],
                        typed,
                        &mut out,
                    );
                }
            }
            _ => walk(v, k, vec![format!("f:{k}")], typed, &mut out),
        }
    }
    out
}

fn walk(v: &Value, field: &str, path: FieldPath, typed: bool, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, cv) in m {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                walk(cv, k, p, typed, out);
            }
        }
        Value::Array(a) => match list_key(field, a, typed) {
            Some(key) => {
                for item in a {
                    let mut p = path.clone();
                    p.push(item_elem(key, item));
                    out.insert(p.clone());
                    for (k, cv) in item.as_object().into_iter().flatten() {
                        let mut cp = p.clone();
                        cp.push(format!("f:{k}"));
                        walk(cv, k, cp, typed, out);
                    }
                }
            }
            None => {
                out.insert(path);
            }
        },
        _ => {
            out.insert(path);
        }
    }
}

fn parse_key(elem: &str) -> Option<Map<String, Value>> {
    serde_json::from_str::<Value>(elem.strip_prefix("k:")?)
        .ok()?
        .as_object()
        .cloned()
}

fn matches(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| item.get(k) == Some(v))
}

pub fn get_path<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for e in path {
        if let Some(f) = e.strip_prefix("f:") {
            cur = cur.as_object()?.get(f)?;
        } else {
            let key = parse_key(e)?;
            cur = cur.as_array()?.iter().find(|i| matches(i, &key))?;
        }
    }
    Some(cur)
}

fn remove_path(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for e in parent {
        let next = if let Some(f) = e.strip_prefix("f:") {
            cur.as_object_mut().and_then(|m| m.get_mut(f))
        } else {
            let Some(key) = parse_key(e) else { return };
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| matches(i, &key)))
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let (Some(key), Some(a)) = (parse_key(last), cur.as_array_mut()) {
        a.retain(|i| !matches(i, &key));
    }
}

/// `.spec.template.spec.containers[name="app"].image`
pub fn display(path: &[String]) -> String {
    let mut s = String::new();
    for e in path {
        if let Some(f) = e.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = parse_key(e) {
            let parts: Vec<String> = k.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        }
    }
    s
}

// ---- FieldsV1 encoding ----

fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut cur = &mut root;
        for e in p {
            cur = cur
                .entry(e.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("object");
        }
        if p.last().is_some_and(|e| e.starts_with("k:")) {
            cur.insert(".".into(), json!({}));
        }
    }
    // A list item with children also owns itself ("."), one without is a leaf.
    Value::Object(root)
}

fn from_fields_v1(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    if m.is_empty() {
        out.insert(path.clone());
        return;
    }
    for (k, cv) in m {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        path.push(k.clone());
        from_fields_v1(cv, path, out);
        path.pop();
    }
}

pub fn parse(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let mut set = FieldSet::new();
            from_fields_v1(&e["fieldsV1"], &mut vec![], &mut set);
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: e["subresource"].as_str().map(String::from),
                set,
            }
        })
        .collect()
}

pub fn write(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.set),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if list.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = Value::Array(list);
    }
}

fn entry_mut<'a>(
    entries: &'a mut Vec<Entry>,
    manager: &str,
    op: &str,
    api_version: &str,
    sub: Option<&str>,
) -> &'a mut Entry {
    let i = match entries
        .iter()
        .position(|e| e.manager == manager && e.operation == op && e.subresource.as_deref() == sub)
    {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: manager.into(),
                operation: op.into(),
                api_version: api_version.into(),
                time: now(),
                subresource: sub.map(String::from),
                set: FieldSet::new(),
            });
            entries.len() - 1
        }
    };
    let e = &mut entries[i];
    e.time = now();
    e.api_version = api_version.into();
    e
}

/// Records a non-apply write (create, update, patch) by `manager` from `old` to `new`.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    typed: bool,
    sub: Option<&str>,
) {
    let api_version = new["apiVersion"].as_str().unwrap_or_default().to_string();
    let empty = json!({});
    let old_v = old.unwrap_or(&empty);
    let with_status = sub == Some("status");
    let mut entries = old.map(parse).unwrap_or_default();
    let new_set = field_set(new, typed, with_status || old.is_none());
    let old_set = field_set(old_v, typed, with_status || old.is_none());
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| {
            if p.last().is_some_and(|e| e.starts_with("k:")) {
                get_path(old_v, p).is_none()
            } else {
                get_path(old_v, p) != get_path(new, p)
            }
        })
        .cloned()
        .collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    if changed.is_empty() && removed.is_empty() && old.is_some() {
        write(new, &entries);
        return;
    }
    for e in entries.iter_mut() {
        e.set
            .retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    if !changed.is_empty() {
        entry_mut(&mut entries, manager, "Update", &api_version, sub)
            .set
            .extend(changed);
    }
    write(new, &entries);
}

fn merge(base: &mut Value, applied: &Value, field: &str, typed: bool) {
    match (base, applied) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, av) in a {
                match b.get_mut(k) {
                    Some(bv) if !av.is_null() => merge(bv, av, k, typed),
                    _ => {
                        b.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(a)) => match list_key(field, a, typed) {
            Some(key) if b.iter().all(|i| i.get(key).is_some()) => {
                for ai in a {
                    match b.iter_mut().find(|bi| bi[key] == ai[key]) {
                        Some(bi) => merge(bi, ai, "", typed),
                        None => b.push(ai.clone()),
                    }
                }
            }
            _ => *b = a.clone(),
        },
        (b, a) => *b = a.clone(),
    }
}

/// Server-side apply of `applied` by `manager` onto `current` (None: the object is created).
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    typed: bool,
    with_status: bool,
) -> Result<Value, Vec<Conflict>> {
    let mut merged = current.cloned().unwrap_or_else(
        || json!({"apiVersion": applied["apiVersion"], "kind": applied["kind"], "metadata": {}}),
    );
    let mut entries = current.map(parse).unwrap_or_default();
    let api_version = applied["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let applied_set = field_set(applied, typed, with_status);
    let mut conflicts = vec![];
    for e in entries
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
    {
        for p in applied_set.intersection(&e.set) {
            if p.last().is_some_and(|x| x.starts_with("k:")) {
                continue;
            }
            if get_path(&merged, p) != get_path(applied, p) {
                conflicts.push((e.manager.clone(), e.api_version.clone(), display(p)));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for e in entries
        .iter_mut()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
    {
        e.set.retain(|p| {
            !applied_set.contains(p)
                || p.last().is_some_and(|x| x.starts_with("k:"))
                || get_path(&merged, p) == get_path(applied, p)
        });
    }
    let previous = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply")
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let mut body = applied.clone();
    if let Some(m) = body.as_object_mut() {
        if !with_status {
            m.remove("status");
        }
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    merge(&mut merged, &body, "", typed);
    let mut stale: Vec<&FieldPath> = previous.difference(&applied_set).collect();
    stale.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in stale {
        let owned_elsewhere = entries
            .iter()
            .filter(|e| !(e.manager == manager && e.operation == "Apply"))
            .any(|e| e.set.iter().any(|q| q.starts_with(p)));
        if !owned_elsewhere {
            remove_path(&mut merged, p);
        }
    }
    entry_mut(&mut entries, manager, "Apply", &api_version, None).set = applied_set;
    write(&mut merged, &entries);
    Ok(merged)
}

/// The 409 message kube-apiserver sends for apply conflicts.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    let mut by_mgr: Vec<(String, String, Vec<String>)> = vec![];
    for (m, v, p) in conflicts {
        match by_mgr.iter_mut().find(|(bm, bv, _)| bm == m && bv == v) {
            Some(x) => x.2.push(p.clone()),
            None => by_mgr.push((m.clone(), v.clone(), vec![p.clone()])),
        }
    }
    let parts: Vec<String> = by_mgr
        .iter()
        .map(|(m, v, ps)| {
            if ps.len() == 1 {
                format!("conflict with \"{m}\" using {v}: {}", ps[0])
            } else {
                format!("conflicts with \"{m}\" using {v}:\n- {}", ps.join("\n- "))
            }
        })
        .collect();
    format!(
        "Apply failed with {n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        parts.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3s_fields_v1_round_trip_and_apply_removal() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "1"}},
                         "spec": {"containers": [{"name": "c", "image": "i"}], "tolerations": [{"key": "k"}]}});
        let set = field_set(&obj, true, false);
        let mut back = FieldSet::new();
        from_fields_v1(&to_fields_v1(&set), &mut vec![], &mut back);
        assert_eq!(set, back);
        let item = vec![
            "f:spec".to_string(),
            "f:containers".into(),
            r#"k:{"name":"c"}"#.into(),
        ];
        assert!(set.contains(&item), "{set:?}");
        assert!(
            set.contains(&vec!["f:spec".to_string(), "f:tolerations".into()]),
            "non-keyed lists are atomic"
        );
        assert_eq!(
            display(&[
                item[0].clone(),
                item[1].clone(),
                item[2].clone(),
                "f:image".into()
            ]),
            r#".spec.containers[name="c"].image"#
        );

        let a1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}, "data": {"x": "1", "y": "2"}});
        let created = apply(None, &a1, "m1", false, true, true).unwrap();
        let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}, "data": {"x": "1"}});
        let next = apply(Some(&created), &a2, "m1", false, true, true).unwrap();
        assert_eq!(next["data"], json!({"x": "1"}));
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}, "data": {"x": "2"}});
        let conflicts = apply(Some(&next), &other, "m2", false, true, true).unwrap_err();
        assert_eq!(
            conflict_message(&conflicts),
            r#"Apply failed with 1 conflict: conflict with "m1" using v1: .data.x"#
        );
    }
}
