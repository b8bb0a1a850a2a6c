//! The data-loss window: for each backed-up volume, where it belonged, when its last backup
//! was taken, how old that is (what a restore loses), its size, and a flag when there is no
//! backup or the backup is older than `[restore] max_backup_age_hours`.

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::nas::BackedUpVolume;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub volume: String,
    pub namespace: Option<String>,
    pub pvc: Option<String>,
    pub last_backup: Option<String>,
    pub last_backup_at: Option<String>,
    /// Seconds between the last backup and now: the data a restore cannot bring back.
    pub age_secs: Option<i64>,
    pub size_bytes: u64,
    /// Why the operator should look twice; `None` when the backup is fine.
    pub flag: Option<String>,
    /// Left out by `--skip-volume`.
    pub skipped: bool,
    /// Not restorable: what the NAS holds for it cannot be trusted (see `flag`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rejected: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub target: String,
    pub checked_at: String,
    pub max_age_hours: u64,
    pub rows: Vec<Row>,
}

impl Table {
    pub fn build(
        target: &str,
        volumes: &[BackedUpVolume],
        max_age_hours: u64,
        skip: &[String],
        now: OffsetDateTime,
    ) -> Table {
        let rows = volumes
            .iter()
            .map(|v| {
                let at = v
                    .last_backup_at
                    .as_deref()
                    .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
                let age_secs = at.map(|t| (now - t).whole_seconds());
                let flag = match (&v.last_backup, age_secs) {
                    _ if v.rejected.is_some() => v
                        .rejected
                        .as_ref()
                        .map(|why| format!("not restored: {why}")),
                    (None, _) => Some("no completed backup: nothing to restore".to_string()),
                    (Some(_), None) => Some("backup time unreadable".to_string()),
                    (Some(_), Some(age)) if age > max_age_hours as i64 * 3600 => Some(format!(
                        "older than {max_age_hours}h: the backups may have stopped"
                    )),
                    _ if v.pvc.is_none() => {
                        Some("no PVC recorded: restored as a volume only".to_string())
                    }
                    _ => None,
                };
                Row {
                    volume: v.volume.clone(),
                    namespace: v.namespace.clone(),
                    pvc: v.pvc.clone(),
                    last_backup: v.last_backup.clone(),
                    last_backup_at: v.last_backup_at.clone(),
                    age_secs,
                    size_bytes: v.size_bytes,
                    flag,
                    skipped: skip.contains(&v.volume),
                    rejected: v.rejected.is_some(),
                }
            })
            .collect();
        Table {
            target: target.to_string(),
            checked_at: now
                .replace_nanosecond(0)
                .unwrap_or(now)
                .format(&Rfc3339)
                .unwrap_or_default(),
            max_age_hours,
            rows,
        }
    }

    /// The rows a restore acts on: backed up and not skipped.
    pub fn to_restore(&self) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(|r| !r.skipped && !r.rejected && r.last_backup.is_some())
    }

    pub fn flagged(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.flag.is_some() && !r.skipped)
            .count()
    }

    /// The human table (stdout or stderr, as the caller decides).
    pub fn render(&self) -> String {
        let mut out = format!(
            "Backups on the NAS ({}), checked {}:\n",
            self.target, self.checked_at
        );
        let owner_of = |r: &Row| match (&r.namespace, &r.pvc) {
            (Some(ns), Some(pvc)) => format!("{ns}/{pvc}"),
            _ => "-".into(),
        };
        let vw = self
            .rows
            .iter()
            .map(|r| r.volume.len())
            .max()
            .unwrap_or(0)
            .max(6);
        let ow = self
            .rows
            .iter()
            .map(|r| owner_of(r).len())
            .max()
            .unwrap_or(0)
            .max(13);
        out.push_str(&format!(
            "  {:<vw$} {:<ow$} {:<19} {:>9} {:>10}\n",
            "VOLUME", "NAMESPACE/PVC", "LAST BACKUP (UTC)", "AGE", "SIZE"
        ));
        for r in &self.rows {
            let owner = owner_of(r);
            let at = r
                .last_backup_at
                .as_deref()
                .map(|t| t.trim_end_matches('Z').replace('T', " "))
                .unwrap_or_else(|| "never".into());
            let age = r.age_secs.map(human_age).unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "  {:<vw$} {:<ow$} {:<19} {:>9} {:>10}\n",
                r.volume,
                owner,
                at,
                age,
                human_size(r.size_bytes)
            ));
            if r.skipped {
                out.push_str("      skipped (--skip-volume): not restored\n");
            } else if let Some(flag) = &r.flag {
                out.push_str(&format!("      ! {flag}\n"));
            }
        }
        if self.to_restore().next().is_some() {
            out.push_str(FILESYSTEM_NOTE);
        }
        let worst = self.to_restore().filter_map(|r| r.age_secs).max();
        if let Some(worst) = worst {
            out.push_str(&format!(
                "A restore brings every volume back to its last backup: up to {} of changes are lost.\n",
                human_age(worst)
            ));
        }
        out
    }
}

/// Longhorn's backups record each volume's access mode but not its filesystem.
pub const FILESYSTEM_NOTE: &str = "Filesystem: Longhorn's backups do not record one. Each PV gets the fsType of its StorageClass if that class exists at restore time, else ext4 (Longhorn's default); a volume formatted otherwise (xfs) then needs its PV's spec.csi.fsType changed before it is used.\n";

pub fn human_age(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn vol(name: &str, at: Option<&str>) -> BackedUpVolume {
        BackedUpVolume {
            volume: name.into(),
            namespace: Some("apps".into()),
            pvc: Some(format!("{name}-pvc")),
            last_backup: at.map(|_| "backup-1".to_string()),
            last_backup_at: at.map(String::from),
            size_bytes: 1 << 30,
            rejected: None,
        }
    }

    #[test]
    fn ages_and_flags_follow_the_limit() {
        let now = datetime!(2026-11-26 12:00 UTC);
        let t = Table::build(
            "nfs://nas:/b",
            &[
                vol("fresh", Some("2026-11-26T10:30:00Z")),
                vol("stale", Some("2026-11-24T12:00:00Z")),
                vol("never", None),
            ],
            26,
            &[],
            now,
        );
        assert_eq!(t.rows[0].age_secs, Some(5400));
        assert_eq!(t.rows[0].flag, None);
        assert!(t.rows[1]
            .flag
            .as_deref()
            .unwrap()
            .contains("older than 26h"));
        assert!(t.rows[2]
            .flag
            .as_deref()
            .unwrap()
            .contains("no completed backup"));
        assert_eq!(t.to_restore().count(), 2);
        assert_eq!(t.flagged(), 2);
        let text = t.render();
        assert!(text.contains("apps/fresh-pvc"), "{text}");
        assert!(text.contains("1h30m"), "{text}");
        assert!(text.contains("up to 2d0h"), "{text}");
        assert!(
            text.contains("Filesystem: Longhorn's backups do not record one"),
            "{text}"
        );
        assert!(text.contains("else ext4"), "{text}");
    }

    #[test]
    fn skipped_volumes_are_not_restored_or_flagged() {
        let now = datetime!(2026-11-26 12:00 UTC);
        let t = Table::build(
            "nfs://nas:/b",
            &[vol("bad", Some("2026-11-20T00:00:00Z"))],
            26,
            &["bad".to_string()],
            now,
        );
        assert_eq!(t.to_restore().count(), 0);
        assert_eq!(t.flagged(), 0);
        assert!(t.render().contains("skipped"));
    }

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(human_size(1 << 30), "1.0 GiB");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_age(59), "0m");
        assert_eq!(human_age(3 * 86400 + 7200), "3d2h");
    }
}
