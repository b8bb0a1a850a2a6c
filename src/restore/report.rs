//! The restore's final report: how long each phase took, per volume the backup it came from
//! and how old that backup was when restored (the data actually lost), every Argo CD app's
//! state, and what rebox did about recurring backup jobs. Printed, and written as JSON next
//! to the laptop's journal (also after a failed run, so it names what failed).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::longhorn::Outcome;
use super::table::Table;
use crate::flow::RunReport;

#[derive(Debug, Clone, Serialize)]
pub struct AppState {
    pub name: String,
    pub sync: String,
    pub health: String,
}

#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub host: String,
    pub finished_at: String,
    pub succeeded: bool,
    pub error: Option<String>,
    pub phases: Option<&'a RunReport>,
    /// The data-loss table as shown before the restore.
    pub backups: Option<&'a Table>,
    pub volumes: &'a [Outcome],
    pub apps: &'a [AppState],
    pub recurring_jobs: String,
}

impl Report<'_> {
    /// `<journal dir>/restore-report.json`, 0600.
    pub fn write(&self, journal_path: &Path) -> Result<PathBuf> {
        use std::io::Write;
        let dir = journal_path
            .parent()
            .context("journal path has no directory")?;
        std::fs::create_dir_all(dir)?;
        let path = dir.join("restore-report.json");
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(run) = self.phases {
            let total: u64 = run.phases.iter().map(|p| p.duration_ms).sum();
            out.push_str(&format!("Phases ({:.1}s):\n", total as f64 / 1000.0));
            for p in &run.phases {
                let how = match p.outcome {
                    crate::flow::Outcome::Ran => format!("{:.1}s", p.duration_ms as f64 / 1000.0),
                    crate::flow::Outcome::AlreadyDone => "already done".into(),
                };
                out.push_str(&format!("  {:<70} {how}\n", p.title));
            }
        }
        if !self.volumes.is_empty() {
            out.push_str("Volumes:\n");
            let owner_of = |v: &Outcome| match (&v.namespace, &v.pvc) {
                (Some(ns), Some(pvc)) => format!("{ns}/{pvc}"),
                _ => "-".into(),
            };
            let vw = self
                .volumes
                .iter()
                .map(|v| v.volume.len())
                .max()
                .unwrap_or(0);
            let ow = self
                .volumes
                .iter()
                .map(|v| owner_of(v).len())
                .max()
                .unwrap_or(0);
            for v in self.volumes {
                let owner = owner_of(v);
                let lost = v
                    .backup_at
                    .as_deref()
                    .and_then(|at| age_at(at, &self.finished_at))
                    .map(super::table::human_age)
                    .unwrap_or_else(|| "-".into());
                let size = v
                    .restored_bytes
                    .map(super::table::human_size)
                    .unwrap_or_else(|| "-".into());
                out.push_str(&format!(
                    "  {:<vw$} {:<ow$} {:<16} {:>10}  backup age {lost}\n",
                    v.volume, owner, v.state, size
                ));
                if let Some(e) = &v.error {
                    out.push_str(&format!("      {e}\n"));
                }
            }
        }
        if !self.apps.is_empty() {
            out.push_str("Argo CD applications:\n");
            for a in self.apps {
                out.push_str(&format!("  {:<40} {:<10} {}\n", a.name, a.sync, a.health));
            }
        }
        out.push_str(&format!("Recurring backups: {}\n", self.recurring_jobs));
        out
    }
}

/// Seconds from an RFC 3339 time to another.
fn age_at(from: &str, to: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let a = time::OffsetDateTime::parse(from, &Rfc3339).ok()?;
    let b = time::OffsetDateTime::parse(to, &Rfc3339).ok()?;
    Some((b - a).whole_seconds())
}

/// Every Argo CD Application's sync and health, for the restore's report.
pub async fn app_states(client: &kube::Client, ns: &str) -> Result<Vec<AppState>> {
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(client.clone(), ns, &crate::site::readiness::app_resource());
    let mut out: Vec<_> = api
        .list(&kube::api::ListParams::default())
        .await?
        .items
        .iter()
        .map(|o| {
            let s = &o.data["status"];
            AppState {
                name: o.metadata.name.clone().unwrap_or_default(),
                sync: s["sync"]["status"]
                    .as_str()
                    .unwrap_or("Unknown")
                    .to_string(),
                health: s["health"]["status"]
                    .as_str()
                    .unwrap_or("Unknown")
                    .to_string(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
