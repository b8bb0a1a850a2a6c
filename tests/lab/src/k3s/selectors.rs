//! Label and field selectors for list, watch and deletecollection.
//!
//! Contract followed: "Labels and Selectors" (equality `=`, `==`, `!=`; set-based `in`,
//! `notin`, `key`, `!key`) and "Field Selectors" with the fields kube-apiserver supports for
//! the kinds here: `metadata.name` and `metadata.namespace` everywhere, Pod `status.phase`,
//! `spec.nodeName`, `spec.serviceAccountName`, `spec.restartPolicy`, `spec.schedulerName`,
//! `status.podIP`; Secret `type`; Event `involvedObject.*`, `reason`, `type`, `source`; Job
//! `status.successful`; Node `spec.unschedulable`; Namespace `status.phase`. Any other field
//! is refused with 400 `field label not supported`.
//! Left out: `selectableFields` of CRDs, set-based operators in field selectors.

use serde_json::Value;

use super::status::{ApiError, ApiResult};

#[derive(Debug, Clone)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, Default)]
pub struct Selector {
    labels: Vec<Req>,
    fields: Vec<Req>,
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (vec![], String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

fn set(v: &str) -> ApiResult<Vec<String>> {
    let v = v.trim();
    let inner = v
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to parse requirement: found '{v}', expected: '('"
            ))
        })?;
    Ok(inner
        .split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect())
}

fn parse_one(r: &str) -> ApiResult<Req> {
    let r = r.trim();
    if let Some((k, v)) = r.split_once("!=") {
        return Ok(Req::Ne(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = r.split_once("==") {
        return Ok(Req::Eq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = r.split_once('=') {
        return Ok(Req::Eq(k.trim().into(), v.trim().into()));
    }
    if let Some(k) = r.strip_prefix('!') {
        return Ok(Req::NotExists(k.trim().into()));
    }
    let words: Vec<&str> = r.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let rest = words[1].trim_start();
        if let Some(v) = rest.strip_prefix("notin") {
            return Ok(Req::NotIn(words[0].into(), set(v)?));
        }
        if let Some(v) = rest.strip_prefix("in") {
            return Ok(Req::In(words[0].into(), set(v)?));
        }
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement: {r}"
        )));
    }
    if r.contains(['(', ')', ' ']) || r.is_empty() {
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement: {r}"
        )));
    }
    Ok(Req::Exists(r.into()))
}

fn supported_field(kind: &str, f: &str) -> bool {
    if matches!(f, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match kind {
        "Pod" => matches!(
            f,
            "status.phase"
                | "spec.nodeName"
                | "spec.serviceAccountName"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        "Secret" => f == "type",
        "Event" => {
            f.starts_with("involvedObject.")
                || matches!(f, "reason" | "type" | "source" | "reportingComponent")
        }
        "Job" => f == "status.successful",
        "Node" => f == "spec.unschedulable",
        "Namespace" => f == "status.phase",
        "ReplicaSet" => f == "status.replicas",
        _ => false,
    }
}

impl Selector {
    pub fn parse(label: Option<&str>, field: Option<&str>, kind: &str) -> ApiResult<Selector> {
        let mut s = Selector::default();
        for r in split_top(label.unwrap_or_default()) {
            s.labels.push(parse_one(&r)?);
        }
        for r in split_top(field.unwrap_or_default()) {
            let req = parse_one(&r)?;
            let key = match &req {
                Req::Eq(k, _) | Req::Ne(k, _) => k.clone(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid selector: '{r}'; can't understand '{r}'"
                    )))
                }
            };
            if !supported_field(kind, &key) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {key}"
                )));
            }
            s.fields.push(req);
        }
        Ok(s)
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str).map(String::from);
        let field = |k: &str| {
            let mut cur = obj;
            for part in k.split('.') {
                cur = &cur[part];
            }
            match cur {
                Value::String(s) => Some(s.clone()),
                Value::Null => Some(String::new()),
                other => Some(other.to_string()),
            }
        };
        self.labels.iter().all(|r| eval(r, &label)) && self.fields.iter().all(|r| eval(r, &field))
    }
}

fn eval(r: &Req, get: &dyn Fn(&str) -> Option<String>) -> bool {
    match r {
        Req::Eq(k, v) => get(k).as_deref() == Some(v.as_str()),
        Req::Ne(k, v) => get(k).as_deref() != Some(v.as_str()),
        Req::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
        Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn k3s_selector_grammar() {
        let obj = json!({"metadata": {"name": "n", "namespace": "ns", "labels": {"app": "web", "tier": "front"}}, "status": {"phase": "Running"}});
        let m = |l: &str, f: &str| {
            Selector::parse(Some(l), Some(f), "Pod")
                .unwrap()
                .matches(&obj)
        };
        assert!(m("app=web,tier in (front, back)", "status.phase=Running"));
        assert!(m("app==web,!missing,tier", "metadata.name!=x"));
        assert!(!m("app notin (web)", ""));
        assert!(!m("", "status.phase=Pending"));
        assert!(Selector::parse(None, Some("spec.foo=1"), "Pod").is_err());
        assert!(Selector::parse(Some("app in web"), None, "Pod").is_err());
    }
}
