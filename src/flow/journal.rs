//! The journal: which phases of a flow finished, when, and how long they took. Kept on the
//! server (/var/lib/rebox/journal.json, root-only) and on the laptop, so either side can tell
//! a rerun where the last run stopped. It never holds a secret.

use std::path::PathBuf;

use anyhow::{Context, Result};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::remote::Remote;

pub const SERVER_PATH: &str = "/var/lib/rebox/journal.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Journal {
    pub version: u32,
    /// Which flow this is (`rebuild`, `rebuild --restore-from-nas`, …).
    pub flow: String,
    pub started_at: String,
    pub updated_at: String,
    pub phases: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub id: String,
    pub title: String,
    pub state: State,
    pub finished_at: String,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Applied and verified in some run.
    Done,
    /// Found already done (no work remained).
    AlreadyDone,
    Failed,
}

impl Journal {
    pub fn new(flow: &str) -> Journal {
        let now = now();
        Journal {
            version: FORMAT_VERSION,
            flow: flow.to_string(),
            started_at: now.clone(),
            updated_at: now,
            phases: Vec::new(),
        }
    }

    /// Records the outcome of a phase, replacing any earlier entry for it.
    pub fn record(&mut self, entry: Entry) {
        self.phases.retain(|e| e.id != entry.id);
        self.phases.push(entry);
        self.updated_at = now();
    }

    pub fn is_done(&self, id: &str) -> bool {
        self.phases
            .iter()
            .any(|e| e.id == id && e.state != State::Failed)
    }

    pub fn done_count(&self) -> usize {
        self.phases
            .iter()
            .filter(|e| e.state != State::Failed)
            .count()
    }
}

pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Somewhere a journal is kept.
#[async_trait]
pub trait Store: Send + Sync {
    fn describe(&self) -> String;
    async fn load(&self) -> Result<Option<Journal>>;
    async fn save(&self, journal: &Journal) -> Result<()>;
}

/// A journal file on the laptop, written atomically with mode 0600.
pub struct LocalStore {
    pub path: PathBuf,
}

impl LocalStore {
    /// ~/.local/state/rebox/<host>/journal.json
    pub fn for_host(host: &str) -> Result<LocalStore> {
        let base = dirs::state_dir()
            .or_else(|| dirs::home_dir().map(|h| h.join(".local/state")))
            .context("cannot find a state directory for the laptop's journal")?;
        let safe: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(LocalStore {
            path: base.join("rebox").join(safe).join("journal.json"),
        })
    }
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn load(&self) -> Result<Option<Journal>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("reading the journal {}", self.path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    async fn save(&self, journal: &Journal) -> Result<()> {
        use std::io::Write;
        let dir = self
            .path
            .parent()
            .context("journal path has no directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(serde_json::to_string_pretty(journal)?.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path)
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }
}

/// The journal on the server, written through sudo from stdin and renamed into place.
pub struct ServerStore<'a> {
    pub remote: &'a Remote,
}

#[async_trait]
impl Store for ServerStore<'_> {
    fn describe(&self) -> String {
        format!("{}:{SERVER_PATH}", self.remote.target.host)
    }

    async fn load(&self) -> Result<Option<Journal>> {
        let out = self
            .remote
            .sudo(&format!("cat {SERVER_PATH} 2>/dev/null || true"))
            .await?;
        let text = out.stdout_str();
        if text.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_str(&text).context("reading the server's journal")?,
        ))
    }

    async fn save(&self, journal: &Journal) -> Result<()> {
        self.remote
            .write_root_file(SERVER_PATH, &serde_json::to_vec_pretty(journal)?)
            .await
            .context("saving the server's journal")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, state: State) -> Entry {
        Entry {
            id: id.into(),
            title: id.into(),
            state,
            finished_at: now(),
            duration_ms: 1,
            error: None,
        }
    }

    #[test]
    fn record_replaces_earlier_entries() {
        let mut j = Journal::new("rebuild");
        j.record(entry("a", State::Failed));
        assert!(!j.is_done("a"));
        j.record(entry("a", State::Done));
        assert!(j.is_done("a"));
        assert_eq!(j.phases.len(), 1);
    }

    #[tokio::test]
    async fn local_store_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore {
            path: dir.path().join("h/journal.json"),
        };
        assert_eq!(store.load().await.unwrap(), None);
        let mut j = Journal::new("rebuild");
        j.record(entry("k3s", State::Done));
        store.save(&j).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(j));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&store.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
