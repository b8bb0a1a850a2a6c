//! What `rebox key export | verify` print about a backup: its metadata and fingerprints, and
//! how its shares compare with the cluster's Secret. Built from a [`Summary`], so no key can
//! reach these texts.

use std::fmt::Write;
use std::path::Path;

use serde_json::{json, Value};

use super::document::Summary;

/// A verified file and how it was protected (`"keys"` or `"passphrase"`).
pub struct Verified<'a> {
    pub file: &'a Path,
    pub protected_by: &'a str,
}

/// The summary as `--json`: the summary's fields, plus the verified file or the files written.
pub fn summary_json(
    s: &Summary,
    verified: Option<&Verified<'_>>,
    written: &[(String, String)],
) -> Value {
    let mut v = serde_json::to_value(s).expect("a summary is plain data");
    if let Some(f) = verified {
        v["file"] = f.file.display().to_string().into();
        v["protected_by"] = f.protected_by.into();
        v["valid"] = true.into();
    }
    if !written.is_empty() {
        v["written"] = written
            .iter()
            .map(|(f, c)| json!({ "file": f, "check": c }))
            .collect();
    }
    v
}

/// The summary for a human: what the file is, then one line per share and extra secret.
pub fn summary_text(s: &Summary, verified: Option<&Verified<'_>>) -> String {
    let mut out = String::new();
    match verified {
        Some(f) => {
            let _ = writeln!(out, "{}: a valid rebox unseal-key backup", f.file.display());
            let _ = writeln!(out, "  protected by    {}", f.protected_by);
        }
        None => out.push_str("backup written (metadata and fingerprints; the key is not shown):\n"),
    }
    let _ = writeln!(out, "  format version  {}", s.format_version);
    let _ = writeln!(out, "  cluster         {}", s.cluster);
    let _ = writeln!(
        out,
        "  created         {} by {}",
        s.created_at, s.created_by
    );
    let _ = writeln!(
        out,
        "  unseal          {} of {} shares needed; this backup holds {}",
        s.threshold,
        s.share_count,
        s.shares.len()
    );
    for f in s.shares.iter().chain(&s.extra) {
        let _ = writeln!(out, "  {:<15} sha256:{}", f.name, f.sha256);
    }
    out
}

/// Where the cluster's shares were read: the Secret, its data key, the server.
pub struct Against {
    pub secret: String,
    pub key: String,
    pub server: String,
}

/// The backup's share fingerprints set against the cluster's.
pub struct Comparison {
    /// Every share in the cluster's Secret is in the backup, and the backup holds no share
    /// the cluster's key does not (the same key, whatever the order).
    pub matches: bool,
    pub only_in_backup: Vec<String>,
    pub only_in_cluster: Vec<String>,
    cluster: Vec<String>,
    at: Against,
}

impl Comparison {
    pub fn new(backup: &Summary, cluster: Vec<String>, at: Against) -> Self {
        let b: Vec<String> = backup
            .shares
            .iter()
            .map(|f| f.sha256.to_ascii_lowercase())
            .collect();
        let only_in_backup: Vec<String> =
            b.iter().filter(|f| !cluster.contains(f)).cloned().collect();
        let only_in_cluster: Vec<String> =
            cluster.iter().filter(|f| !b.contains(f)).cloned().collect();
        Comparison {
            matches: only_in_backup.is_empty() && only_in_cluster.is_empty() && !cluster.is_empty(),
            only_in_backup,
            only_in_cluster,
            cluster,
            at,
        }
    }

    /// The `against_cluster` object of `verify --json`.
    pub fn json(&self) -> Value {
        json!({
            "secret": self.at.secret,
            "key": self.at.key,
            "server": self.at.server,
            "cluster_shares": self.cluster,
            "matches": self.matches,
            "only_in_backup": self.only_in_backup,
            "only_in_cluster": self.only_in_cluster,
        })
    }

    /// The error `verify --against-cluster` reports when the backup `file` does not match.
    pub fn mismatch(&self, file: &std::path::Path) -> anyhow::Error {
        anyhow::anyhow!(crate::next::hinted(
            format!("the backup {} does not hold the key in Secret {} on {}", file.display(), self.at.secret, self.at.server),
            "if the cluster's key was rotated, make a new backup from it (`rebox key export --host … -o NEW.age`, then `rebox key verify NEW.age --against-cluster`); if the backup is the right key, the Secret is wrong: `rebox doctor` checks it",
        ))
    }

    /// Both fingerprint lists, each share marked where the other side lacks it, and the verdict.
    pub fn text(&self, s: &Summary) -> String {
        let (at, cluster) = (&self.at, &self.cluster);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "compared with Secret {} (key `{}`) on {}:",
            at.secret, at.key, at.server
        );
        let _ = writeln!(out, "  backup shares   ({})", s.shares.len());
        for f in &s.shares {
            let mark = if self.only_in_backup.contains(&f.sha256.to_ascii_lowercase()) {
                "  (not in the cluster)"
            } else {
                ""
            };
            let _ = writeln!(out, "    {:<13} sha256:{}{mark}", f.name, f.sha256);
        }
        let _ = writeln!(out, "  cluster shares  ({})", cluster.len());
        for (n, fp) in cluster.iter().enumerate() {
            let mark = if self.only_in_cluster.contains(fp) {
                "  (not in the backup)"
            } else {
                ""
            };
            let line = format!("line {}", n + 1);
            let _ = writeln!(out, "    {line:<13} sha256:{fp}{mark}");
        }
        out.push_str(if self.matches {
            "MATCH: the backup holds exactly the cluster's unseal key\n"
        } else {
            "MISMATCH: the backup and the cluster's unseal key differ\n"
        });
        out
    }
}
