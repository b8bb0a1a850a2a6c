//! What a rotation reports: fingerprints, files and the Secret, never a key.

use std::fmt::Write;
use std::path::PathBuf;

use serde::Serialize;

/// The result, for the report and `--json`. Holds no secret: fingerprints only.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `rotated`.
    pub outcome: &'static str,
    /// An interrupted rotation was found and finished.
    pub resumed: bool,
    /// An interrupted rotation was found and rolled back before this one.
    pub rolled_back: Option<String>,
    pub cluster: String,
    pub server: String,
    pub secret: String,
    pub new_backup: PathBuf,
    pub superseded_backup: Option<PathBuf>,
    pub threshold: u32,
    pub share_count: u32,
    pub new_fingerprints: Vec<String>,
    pub old_fingerprints: Vec<String>,
    pub vault_healthy: bool,
    pub next_steps: Vec<String>,
}

impl Report {
    /// The report for a human (stdout); `--json` prints the struct itself.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = self.write_to(&mut out);
        out
    }

    fn write_to(&self, out: &mut String) -> std::fmt::Result {
        let r = self;
        if let Some(what) = &r.rolled_back {
            writeln!(out, "Earlier: {what}.")?;
        }
        let resumed = match r.resumed {
            true => " — an interrupted rotation was finished",
            false => "",
        };
        writeln!(
            out,
            "Unseal key rotated on {} ({}){resumed}:",
            r.server, r.cluster
        )?;
        writeln!(
            out,
            "  new key          {} of {} shares needed",
            r.threshold, r.share_count
        )?;
        for (n, f) in r.new_fingerprints.iter().enumerate() {
            writeln!(out, "  share {:<10} sha256:{f}", n + 1)?;
        }
        writeln!(out, "  new backup       {}", r.new_backup.display())?;
        writeln!(out, "  Secret           {} (holds the new key)", r.secret)?;
        match &r.superseded_backup {
            Some(p) => writeln!(out, "  old backup       {} (superseded)", p.display())?,
            None => writeln!(out, "  old backup       none given (--from)")?,
        }
        let vault = match r.vault_healthy {
            true => "healthy, unsealed",
            false => "NOT healthy: check `rebox status`",
        };
        writeln!(out, "  Vault            {vault}")?;
        writeln!(out, "\nWhat to do now:")?;
        for s in &r.next_steps {
            writeln!(out, "  - {s}")?;
        }
        Ok(())
    }
}
