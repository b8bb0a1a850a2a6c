//! `?watch=1` streams: newline-delimited JSON `{"type": ..., "object": ...}` events.
//!
//! Contract followed: "Efficient detection of changes" (API concepts): without a
//! resourceVersion (or with "0") the stream starts with synthetic ADDED events for the
//! current objects; with resourceVersion N it delivers every change after N in order, or a
//! single `ERROR` event carrying a 410 Expired Status when N is older than the retained
//! history (the HTTP status stays 200, as upstream); `sendInitialEvents=true` ends the initial
//! events with a BOOKMARK annotated `k8s.io/initial-events-end`; `timeoutSeconds` ends the
//! stream; label/field selectors filter events. A restart of lab-k3s ends every watch.
//! Objects that start or stop matching a selector are reported as ADDED / DELETED.
//! Left out: periodic bookmarks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::registry::ResourceType;
use super::selectors::Selector;
use super::status::ApiError;
use super::store::{Event, Store};
use super::table;

pub struct WatchRequest {
    pub rt: ResourceType,
    pub namespace: Option<String>,
    pub selector: Selector,
    pub resource_version: Option<String>,
    pub send_initial_events: bool,
    pub timeout: Option<Duration>,
    pub as_table: bool,
}

struct State {
    pending: VecDeque<Value>,
    rx: Option<broadcast::Receiver<Event>>,
    req: Arc<WatchRequest>,
    deadline: Option<tokio::time::Instant>,
    first: bool,
}

fn wrap(req: &WatchRequest, kind: &str, obj: Value, first: &mut bool) -> Value {
    let object = if req.as_table && kind != "ERROR" && kind != "BOOKMARK" {
        let t = table::table(&req.rt, std::slice::from_ref(&obj), None, *first);
        *first = false;
        t
    } else {
        obj
    };
    json!({"type": kind, "object": object})
}

/// The event type this watch reports for `ev`, if any: a modification that makes an object
/// start (stop) matching the selector is reported as ADDED (DELETED), as upstream.
fn translate(req: &WatchRequest, ev: &Event) -> Option<&'static str> {
    if ev.group != req.rt.group
        || ev.plural != req.rt.plural
        || req.namespace.as_deref().is_some_and(|n| n != ev.namespace)
    {
        return None;
    }
    let now = req.selector.matches(&ev.object);
    match (ev.kind, &ev.old) {
        ("MODIFIED", Some(old)) => match (req.selector.matches(old), now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
        (kind, _) => now.then_some(kind),
    }
}

fn bookmark(req: &WatchRequest, rv: u64, end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"type": "BOOKMARK", "object": {"kind": req.rt.kind, "apiVersion": req.rt.api_version(), "metadata": meta}})
}

pub fn serve(store: &Store, req: WatchRequest) -> Response {
    let req = Arc::new(req);
    let mut pending = VecDeque::new();
    let mut first = true;
    let rx;
    {
        let inner = store.lock();
        let rv = req
            .resource_version
            .as_deref()
            .filter(|s| !s.is_empty() && *s != "0");
        let from = match rv {
            None => {
                let ns = req.namespace.as_deref();
                for o in inner.list(&req.rt.group, &req.rt.plural, ns) {
                    if req.selector.matches(&o) {
                        pending.push_back(wrap(&req, "ADDED", o, &mut first));
                    }
                }
                if req.send_initial_events {
                    pending.push_back(bookmark(&req, inner.rv, true));
                }
                Ok(inner.rv)
            }
            Some(s) => s
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}"))),
        };
        match from.map(|n| (n, inner.watch_from(n))) {
            Ok((_, Ok((past, r)))) => {
                for ev in &past {
                    if let Some(kind) = translate(&req, ev) {
                        pending.push_back(wrap(&req, kind, ev.object.clone(), &mut first));
                    }
                }
                rx = Some(r);
            }
            Ok((n, Err(oldest))) => {
                let st = ApiError::gone(n, oldest).body();
                pending.push_back(json!({"type": "ERROR", "object": st}));
                rx = None;
            }
            Err(e) => return axum::response::IntoResponse::into_response(e),
        }
    }
    let state = State {
        pending,
        rx,
        deadline: req.timeout.map(|t| tokio::time::Instant::now() + t),
        req,
        first,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(v) = st.pending.pop_front() {
                let mut line = serde_json::to_vec(&v).unwrap_or_default();
                line.push(b'\n');
                return Some((Ok::<_, std::io::Error>(bytes_of(line)), st));
            }
            let rx = st.rx.as_mut()?;
            let ev = match st.deadline {
                Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                    Ok(r) => r,
                    Err(_) => return None,
                },
                None => rx.recv().await,
            };
            match ev {
                Ok(ev) => {
                    if let Some(kind) = translate(&st.req, &ev) {
                        let v = wrap(&st.req, kind, ev.object, &mut st.first);
                        st.pending.push_back(v);
                    }
                }
                Err(_) => return None,
            }
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(Body::from_stream(stream))
        .expect("response")
}

fn bytes_of(v: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(v)
}
