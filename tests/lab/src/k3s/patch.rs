//! PATCH bodies other than apply: JSON merge patch (RFC 7386) and JSON patch (RFC 6902)
//! through the `json-patch` crate, and strategic merge patch for built-in kinds.
//!
//! Contract followed: Kubernetes "Update API Objects in Place Using kubectl patch" and
//! apimachinery `strategicpatch`: lists with a patch merge key merge by that key
//! (containers, initContainers, volumes, env, imagePullSecrets by `name`; volumeMounts by
//! `mountPath`; container ports by `containerPort`, Service ports by `port`; conditions by
//! `type`; ownerReferences by `uid`), `metadata.finalizers` merges as a set, other lists are
//! replaced; directives `$patch: replace|delete|merge`, `$retainKeys`,
//! `$deleteFromPrimitiveList/<f>` and `$setElementOrder/<f>` (ordering honoured only for keyed
//! lists); `null` deletes. Strategic merge on custom resources is refused with 415, as upstream.
//! Left out: `$patch` directives inside primitive lists, patch strategies from CRD schemas.

use serde_json::{Map, Value};

/// The merge key of a list field under strategic merge patch, None for replace.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => "name",
        "volumeMounts" | "volumeDevices" => "mountPath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        _ => return None,
    })
}

fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

/// Applies a strategic merge patch to `orig`.
pub fn strategic(orig: &Value, patch: &Value) -> Result<Value, String> {
    let mut out = orig.clone();
    if !patch.is_object() {
        return Err("strategic merge patch must be a JSON object".into());
    }
    merge_map(&mut out, patch)?;
    Ok(out)
}

fn merge_map(orig: &mut Value, patch: &Value) -> Result<(), String> {
    let p = patch.as_object().ok_or("expected a map in the patch")?;
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut m = p.clone();
            m.remove("$patch");
            *orig = Value::Object(strip_directives(&m));
            return Ok(());
        }
        Some("delete") => {
            *orig = Value::Null;
            return Ok(());
        }
        Some("merge") | None => {}
        Some(o) => return Err(format!("unknown patch type: {o}")),
    }
    if !orig.is_object() {
        *orig = Value::Object(Map::new());
    }
    let retain = p.get("$retainKeys").and_then(Value::as_array).cloned();
    for (k, pv) in p {
        if k.starts_with('$')
            && !k.starts_with("$deleteFromPrimitiveList/")
            && !k.starts_with("$setElementOrder/")
        {
            continue;
        }
        if let Some(f) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let Some(a) = orig.get_mut(f).and_then(Value::as_array_mut) {
                let del = pv.as_array().cloned().unwrap_or_default();
                a.retain(|x| !del.contains(x));
            }
            continue;
        }
        if let Some(f) = k.strip_prefix("$setElementOrder/") {
            reorder(orig, f, pv);
            continue;
        }
        let o = orig.as_object_mut().expect("object");
        if pv.is_null() {
            o.remove(k);
            continue;
        }
        match pv {
            Value::Object(_) => {
                let entry = o.entry(k.clone()).or_insert(Value::Null);
                merge_map(entry, pv)?;
                if entry.is_null() {
                    o.remove(k);
                }
            }
            Value::Array(pa) => {
                let entry = o.entry(k.clone()).or_insert(Value::Array(vec![]));
                merge_list(entry, pa, k)?;
            }
            _ => {
                o.insert(k.clone(), pv.clone());
            }
        }
    }
    if let (Some(keys), Some(o)) = (retain, orig.as_object_mut()) {
        o.retain(|k, _| keys.iter().any(|x| x.as_str() == Some(k)));
    }
    Ok(())
}

fn strip_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn merge_list(orig: &mut Value, patch: &[Value], field: &str) -> Result<(), String> {
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *orig = Value::Array(
            patch
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        );
        return Ok(());
    }
    let Some(key) = merge_key(field, patch) else {
        if is_set_list(field) {
            let a = orig.as_array_mut().ok_or("expected a list")?;
            for x in patch {
                if !a.contains(x) {
                    a.push(x.clone());
                }
            }
        } else {
            *orig = Value::Array(patch.to_vec());
        }
        return Ok(());
    };
    if !orig.is_array() {
        *orig = Value::Array(vec![]);
    }
    let a = orig.as_array_mut().expect("array");
    for pi in patch {
        let Some(kv) = pi.get(key) else {
            return Err(format!(
                "map: {pi} does not contain declared merge key: {key}"
            ));
        };
        let pos = a.iter().position(|x| x.get(key) == Some(kv));
        if pi.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                a.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => merge_map(&mut a[i], pi)?,
            None => {
                let mut fresh = Value::Object(Map::new());
                merge_map(&mut fresh, pi)?;
                a.push(fresh);
            }
        }
    }
    Ok(())
}

fn reorder(orig: &mut Value, field: &str, order: &Value) {
    let Some(a) = orig.get_mut(field).and_then(Value::as_array_mut) else {
        return;
    };
    let Some(order) = order.as_array() else {
        return;
    };
    let key = merge_key(field, order);
    let pos = |x: &Value| {
        order.iter().position(|o| match key {
            Some(k) => o.get(k).is_some() && o.get(k) == x.get(k),
            None => o == x,
        })
    };
    let mut items: Vec<(usize, Value)> = a.drain(..).enumerate().collect();
    items.sort_by_key(|(i, x)| (pos(x).unwrap_or(usize::MAX), *i));
    a.extend(items.into_iter().map(|(_, x)| x));
}

/// RFC 7386 merge patch.
pub fn merge(orig: &Value, patch: &Value) -> Value {
    let mut out = orig.clone();
    json_patch::merge(&mut out, patch);
    out
}

/// RFC 6902 JSON patch.
pub fn json(orig: &Value, patch: &Value) -> Result<Value, String> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| e.to_string())?;
    let mut out = orig.clone();
    json_patch::patch(&mut out, &p).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn k3s_strategic_merge_by_key_delete_directive_and_order() {
        let orig = json!({"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]}, {"name": "b", "image": "y"}], "finalizers": ["f1"]}});
        let p = json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}, {"name": "c", "image": "z"}, {"name": "b", "$patch": "delete"}],
            "finalizers": ["f2"],
        }});
        let out = strategic(&orig, &p).unwrap();
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(out["spec"]["containers"][0]["image"], "x");
        assert_eq!(
            out["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(out["spec"]["finalizers"], json!(["f1", "f2"]));
        let replaced = strategic(&orig, &json!({"spec": {"$patch": "replace", "x": 1}})).unwrap();
        assert_eq!(replaced["spec"], json!({"x": 1}));
        let retained = strategic(
            &json!({"s": {"a": 1, "b": 2}}),
            &json!({"s": {"$retainKeys": ["a", "c"], "c": 3}}),
        )
        .unwrap();
        assert_eq!(retained["s"], json!({"a": 1, "c": 3}));
        assert!(strategic(
            &orig,
            &json!({"spec": {"containers": [{"image": "nokey"}]}})
        )
        .is_err());
    }
}
