//! Fault switches of the lab: one JSON file, `<lab-k3s data dir>/lab-faults.json`
//! ([`FAULTS_FILE`]), read by lab-k3s on every API request and by its controllers on every
//! pass. Tests (or a script on the lab server) write it with [`update`]/[`save`]; removing
//! the file clears every fault. Unknown keys are refused, so a typo never silently injects
//! nothing (lab-k3s then answers 500 to every request, naming the file).
//!
//! ```json
//! {
//!   "api": [{"method": "PATCH", "path": "/apis/apps/v1/namespaces/security/deployments",
//!            "status": 500, "times": 2},
//!           {"path": "/api/v1/namespaces/security/secrets", "status": 409},
//!           {"path": "/apis/longhorn.io", "delayMs": 3000}],
//!   "stuckRestores": ["vault-data-lh"],
//!   "argocdOutOfSync": ["immich"],
//!   "argocdStaleUntilHardRefresh": ["root"],
//!   "slowBackupstoreMs": 1500
//! }
//! ```
//!
//! - `api`: requests whose path starts with `path` (and whose method is `method`, if given)
//!   wait `delayMs` (a slow answer), then fail with `status` as kube-apiserver words it
//!   (`metav1.Status`: 409 `Conflict` "the object has been modified; please apply your
//!   changes to the latest version and try again", 500 `InternalError`, 429
//!   `TooManyRequests`, 503 `ServiceUnavailable`, 504 `Timeout`), or pass through when no
//!   status is set. `times` (optional) counts down and removes the rule at zero.
//! - `stuckRestores`: Longhorn volume names (or `*`) whose restore stops making progress
//!   while listed (it resumes when removed).
//! - `argocdOutOfSync`: Argo CD Application names (or `*`) that stay OutOfSync with a sync
//!   error, whatever refresh is asked for.
//! - `argocdStaleUntilHardRefresh`: Argo CD Application names (or `*`) whose cached manifests
//!   are stale: they stay `OutOfSync` with a `ComparisonError` until a `hard` refresh is asked
//!   for (a `normal` one does not help), then sync as usual (guide scenario 4).
//! - `slowBackupstoreMs`: every call the Longhorn stand-in makes to the backupstore (listing
//!   the NAS, reading a volume's or a backup's config) takes this long instead of the lab's
//!   usual pace: a slow NAS, or a real one over a home network, which widens each step of
//!   Longhorn's piecemeal sync.
//!
//! Other faults need no switch, they are real causes: a corrupt backup is real corruption on
//! the NAS ([`crate::nas::corrupt_volume`] / `NasFixture::corrupt`); a power loss is killing
//! lab-k3s; a sealed Vault is a restart of vault-0's process
//! ([`crate::k3s::controllers::workloads::restart_vault_command`]); Vault refusing a key is a
//! wrong key (the real server, `bao`, refuses it as Vault does).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const FAULTS_FILE: &str = "lab-faults.json";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Faults {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api: Vec<ApiFault>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stuck_restores: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argocd_out_of_sync: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argocd_stale_until_hard_refresh: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_backupstore_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiFault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Faults {
    pub fn stuck_restore(&self, volume: &str) -> bool {
        self.stuck_restores.iter().any(|v| v == volume || v == "*")
    }
    pub fn argocd_out_of_sync(&self, app: &str) -> bool {
        self.argocd_out_of_sync.iter().any(|v| v == app || v == "*")
    }
    pub fn argocd_stale(&self, app: &str) -> bool {
        self.argocd_stale_until_hard_refresh
            .iter()
            .any(|v| v == app || v == "*")
    }
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FAULTS_FILE)
}

/// Reads the switches; a missing file is no fault. An unreadable file is reported on
/// stderr and read as no fault by controllers ([`try_load`] tells the API layer).
pub fn load(data_dir: &Path) -> Faults {
    try_load(data_dir).unwrap_or_else(|e| {
        eprintln!("lab-k3s: {e:#}");
        Faults::default()
    })
}

pub fn try_load(data_dir: &Path) -> anyhow::Result<Faults> {
    let p = path(data_dir);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| anyhow::anyhow!("fault switch file {} is invalid: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Faults::default()),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", p.display())),
    }
}

/// Writes the switches atomically (removes the file when nothing is switched on).
pub fn save(data_dir: &Path, f: &Faults) -> anyhow::Result<()> {
    let p = path(data_dir);
    if *f == Faults::default() {
        match std::fs::remove_file(&p) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    super::store::write_atomic(&p, &serde_json::to_vec_pretty(f)?, 0o644)
}

static LOCK: Mutex<()> = Mutex::new(());

/// Read-modify-write of the switches.
pub fn update(data_dir: &Path, f: impl FnOnce(&mut Faults)) -> anyhow::Result<()> {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut faults = try_load(data_dir)?;
    f(&mut faults);
    save(data_dir, &faults)
}

fn status_body(code: u16, message: Option<&str>) -> (u16, Value) {
    let (reason, default_msg) = match code {
        409 => ("Conflict", "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again"),
        429 => ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
        503 => ("ServiceUnavailable", "the server is currently unable to handle the request"),
        504 => ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request"),
        500 => ("InternalError", "Internal error occurred: injected fault (lab-faults.json)"),
        _ => ("", "injected fault (lab-faults.json)"),
    };
    let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": message.unwrap_or(default_msg), "reason": reason, "code": code});
    if reason.is_empty() {
        body.as_object_mut().expect("object").remove("reason");
    }
    if code == 429 || code == 503 || code == 504 {
        body["details"] = json!({"retryAfterSeconds": 1});
    }
    (code, body)
}

/// The API fault for a request, if any: `(delay, Some((code, Status body)))`. Called by the
/// API router before routing; counts `times` down.
pub fn api_fault(
    data_dir: &Path,
    method: &str,
    req_path: &str,
) -> Option<(Duration, Option<(u16, Value)>)> {
    // Fast path: no file, no fault.
    if !path(data_dir).exists() {
        return None;
    }
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut faults = match try_load(data_dir) {
        Ok(f) => f,
        Err(e) => {
            return Some((
                Duration::ZERO,
                Some(status_body(500, Some(&format!("{e:#}")))),
            ))
        }
    };
    let idx = faults.api.iter().position(|r| {
        req_path.starts_with(&r.path)
            && r.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    })?;
    let rule = faults.api[idx].clone();
    if let Some(t) = rule.times {
        if t <= 1 {
            faults.api.remove(idx);
        } else {
            faults.api[idx].times = Some(t - 1);
        }
        let _ = save(data_dir, &faults);
    }
    let delay = Duration::from_millis(rule.delay_ms.unwrap_or(0));
    Some((
        delay,
        rule.status.map(|c| status_body(c, rule.message.as_deref())),
    ))
}

/// Applies [`api_fault`] to a request: sleeps for a slow answer, and returns the failure
/// response when the rule sets a status.
pub async fn intercept(
    data_dir: &Path,
    method: &str,
    req_path: &str,
) -> Option<axum::response::Response> {
    use axum::response::IntoResponse;
    let (delay, fail) = api_fault(data_dir, method, req_path)?;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (code, body) = fail?;
    let code = axum::http::StatusCode::from_u16(code)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    Some(
        (
            code,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response(),
    )
}
