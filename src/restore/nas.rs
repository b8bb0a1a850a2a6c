//! What the NAS holds, read before anything on the server changes: the backup target is
//! mounted read-only on the server (through SSH and sudo) into a temporary directory, the
//! `volume.cfg` of every backed-up volume is read, and the mount is removed again.
//!
//! Longhorn's backupstore layout (platform-facts §2, `longhorn/backupstore`):
//! `backupstore/volumes/<aa>/<bb>/<volume>/volume.cfg`, a JSON document with `Name`, `Size`
//! (bytes, as a string), `Labels` (those of the newest backup, incl. `KubernetesStatus`, the
//! JSON of the volume's namespace/PVC at backup time), `LastBackupName` and `LastBackupAt`.
//! Only NFS targets can be read this way; for the others Longhorn's BackupVolumes are the
//! first view of the store, once Longhorn runs.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::remote::{shell_quote, ExecOptions, Remote};

/// One volume in the backup store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackedUpVolume {
    /// The Longhorn volume name (the PV's name on the old node).
    pub volume: String,
    /// The namespace and PVC it belonged to, from the `KubernetesStatus` label.
    pub namespace: Option<String>,
    pub pvc: Option<String>,
    /// The newest completed backup, if any.
    pub last_backup: Option<String>,
    /// When that backup was taken (RFC 3339).
    pub last_backup_at: Option<String>,
    pub size_bytes: u64,
    /// Why this entry is not restored: a `volume.cfg` that does not parse, or a name that is
    /// not a Kubernetes name (a NAS's content is checked before any of it reaches an API path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

/// `volume.cfg` as Longhorn's backupstore writes it (only the fields rebox reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeCfg {
    name: String,
    #[serde(default)]
    size: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    last_backup_name: String,
    #[serde(default)]
    last_backup_at: String,
}

/// The `KubernetesStatus` label's fields rebox needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KubernetesStatus {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    pvc_name: String,
}

/// `nfs://host:/export/path` as `host:/export/path`, the form `mount -t nfs` takes. A
/// `?nfsOptions=…` query (Longhorn's syntax for mount options) is not part of the path.
pub fn nfs_source(target: &str) -> Option<String> {
    let rest = target.strip_prefix("nfs://")?;
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let (host, path) = rest.split_once(':')?;
    if host.is_empty() || !path.starts_with('/') {
        return None;
    }
    Some(format!("{host}:{path}"))
}

/// The options of a target's `?nfsOptions=` that the read-only scan mount takes too: only
/// those that decide whether the NAS can be reached at all (protocol version, transport,
/// port). Anything else (`rw`, `suid`, …) is left to Longhorn and never reaches `mount`.
pub fn scan_mount_options(target: &str) -> Vec<String> {
    let Some((_, query)) = target.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("nfsOptions="))
        .flat_map(|opts| opts.split(','))
        .filter(|o| {
            let (key, value) = o.split_once('=').unwrap_or((o, ""));
            matches!(key, "vers" | "nfsvers" | "proto" | "port")
                && !value.is_empty()
                && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
        })
        .map(String::from)
        .collect()
}

const MARKER: &str = "--- rebox volume.cfg";
/// How long mounting the NAS and reading every volume.cfg may take.
const SCAN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5 * 60);
/// Exit statuses of the scan script.
const NO_NFS_CLIENT: u32 = 3;
const MOUNT_FAILED: u32 = 4;

/// Whether the server can mount NFS (nfs-common's `mount.nfs`).
pub async fn server_has_nfs_client(remote: &Remote) -> Result<bool> {
    Ok(remote
        .exec("command -v mount.nfs >/dev/null 2>&1 || test -x /sbin/mount.nfs")
        .await?
        .success())
}

/// Reads every volume of the NFS backup target through the server. Changes nothing that
/// outlives the call (a read-only mount under /run, removed on exit).
pub async fn scan(remote: &Remote, target: &str) -> Result<Vec<BackedUpVolume>> {
    let Some(source) = nfs_source(target) else {
        bail!("the backup target {target} is not an nfs:// URL; only NFS targets can be read before Longhorn runs");
    };
    let script = format!(
        r#"set -u
command -v mount.nfs >/dev/null 2>&1 || test -x /sbin/mount.nfs || exit {NO_NFS_CLIENT}
d=$(mktemp -d /run/rebox-nas.XXXXXX) || exit 1
trap 'umount "$d" 2>/dev/null; rmdir "$d"' EXIT
mount -t nfs -o ro,nosuid,nodev,noexec,soft,timeo=100,retrans=2{extra} {src} "$d" || exit {MOUNT_FAILED}
for cfg in "$d"/backupstore/volumes/*/*/*/volume.cfg; do
  [ -f "$cfg" ] || continue
  printf '%s %s\n' '{MARKER}' "${{cfg#"$d"/}}"
  cat "$cfg"
  echo
done
exit 0"#,
        src = shell_quote(&source),
        extra = scan_mount_options(target)
            .iter()
            .map(|o| format!(",{o}"))
            .collect::<String>(),
    );
    // A NAS that stops answering mid-read must not hang the restore before it starts.
    let opts = ExecOptions {
        deadline: Some(SCAN_DEADLINE),
        ..Default::default()
    };
    let out = remote.sudo_with(&script, opts).await?;
    match out.status {
        0 => Ok(parse_scan(&out.stdout_str())),
        NO_NFS_CLIENT => bail!(crate::next::hinted("the server cannot mount NFS yet (no mount.nfs)", "rebox installs nfs-common first when you run the restore")),
        MOUNT_FAILED => bail!(crate::next::hinted(format!("the NAS did not let the server mount {source}: {}", out.stderr_str().trim()), format!("check the NAS is on, exports {} to this server, and that nas.backup_target in rebox.toml is right; nothing on the server was changed", source.split_once(':').map(|(_, p)| p).unwrap_or_default()))),
        _ => bail!(
            "reading the NAS through the server failed: {}",
            out.stderr_str().trim()
        ),
    }
}

/// Parses the scan's output: `volume.cfg` documents, each after a marker line naming its
/// path. One bad document is one rejected entry; the others are still read.
pub fn parse_scan(text: &str) -> Vec<BackedUpVolume> {
    let mut out = Vec::new();
    for chunk in text.split(MARKER).filter(|d| !d.trim().is_empty()) {
        let (path, doc) = chunk.split_once('\n').unwrap_or((chunk, ""));
        // backupstore/volumes/<aa>/<bb>/<volume>/volume.cfg: the directory names the volume.
        let dir_name = path.trim().rsplit('/').nth(1).unwrap_or("?").to_string();
        let volume = match serde_json::from_str::<VolumeCfg>(doc.trim()) {
            Ok(cfg) => from_cfg(cfg),
            Err(e) => rejected(&dir_name, format!("its volume.cfg is not valid JSON ({e})")),
        };
        out.push(volume);
    }
    out.sort_by(|a, b| a.volume.cmp(&b.volume));
    out
}

/// An entry that is shown but never restored; its name made safe to print.
fn rejected(name: &str, why: String) -> BackedUpVolume {
    BackedUpVolume {
        volume: printable(name),
        namespace: None,
        pvc: None,
        last_backup: None,
        last_backup_at: None,
        size_bytes: 0,
        rejected: Some(printable(&why)),
    }
}

/// `text` with control characters (terminal escapes among them) written as `\u{..}` escapes.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// A DNS-1123 label (namespaces; Longhorn volume names): at most 63 of `a-z0-9-`, starting
/// and ending alphanumeric.
fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A DNS-1123 subdomain (PVC and backup names): at most 253, labels joined by dots.
fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Why a name read from the NAS cannot be used, if it cannot.
fn check_names(v: &BackedUpVolume) -> Option<String> {
    if !is_dns1123_label(&v.volume) {
        return Some("its volume name is not a Kubernetes name".into());
    }
    if v.namespace.as_deref().is_some_and(|n| !is_dns1123_label(n)) {
        return Some("the namespace it records is not a Kubernetes name".into());
    }
    if v.pvc.as_deref().is_some_and(|n| !is_dns1123_subdomain(n)) {
        return Some("the PVC name it records is not a Kubernetes name".into());
    }
    if v.last_backup
        .as_deref()
        .is_some_and(|n| !is_dns1123_subdomain(n))
    {
        return Some("its last backup's name is not a Kubernetes name".into());
    }
    None
}

fn from_cfg(cfg: VolumeCfg) -> BackedUpVolume {
    let ks: Option<KubernetesStatus> = cfg
        .labels
        .as_ref()
        .and_then(|l| l.get("KubernetesStatus"))
        .and_then(|v| serde_json::from_str(v).ok());
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    let v = BackedUpVolume {
        volume: cfg.name,
        namespace: ks.as_ref().and_then(|k| nonempty(k.namespace.clone())),
        pvc: ks.and_then(|k| nonempty(k.pvc_name)),
        last_backup: nonempty(cfg.last_backup_name),
        // Printed in the table: terminal escapes in it are made harmless.
        last_backup_at: nonempty(printable(&cfg.last_backup_at)),
        size_bytes: cfg.size.parse().unwrap_or(0),
        rejected: None,
    };
    match check_names(&v) {
        Some(why) => rejected(&v.volume, why),
        None => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfs_urls_become_mount_sources() {
        assert_eq!(
            nfs_source("nfs://nas.lan:/volume1/lh").as_deref(),
            Some("nas.lan:/volume1/lh")
        );
        assert_eq!(nfs_source("s3://bucket@us-east-1/"), None);
        assert_eq!(nfs_source("nfs://nas.lan"), None);
        assert_eq!(nfs_source("nfs://:/x"), None);
        assert_eq!(
            nfs_source("nfs://nas.lan:/volume1/lh?nfsOptions=soft,timeo=330").as_deref(),
            Some("nas.lan:/volume1/lh")
        );
    }

    #[test]
    fn only_reachability_options_of_nfs_options_reach_the_scan_mount() {
        let t = "nfs://nas:/lh?nfsOptions=nfsvers=4.1,rw,suid,proto=tcp,port=2049,timeo=9;id";
        assert_eq!(
            scan_mount_options(t),
            ["nfsvers=4.1", "proto=tcp", "port=2049"]
        );
        assert!(scan_mount_options("nfs://nas:/lh").is_empty());
        assert!(scan_mount_options("nfs://nas:/lh?nfsOptions=vers=4;reboot").is_empty());
    }

    #[test]
    fn volume_cfgs_parse_with_their_kubernetes_status() {
        let text = format!(
            "{MARKER} backupstore/volumes/aa/bb/pvc-1/volume.cfg\n{}\n{MARKER} backupstore/volumes/cc/dd/orphan/volume.cfg\n{}\n",
            r#"{"Name":"pvc-1","Size":"1073741824","Labels":{"KubernetesStatus":"{\"namespace\":\"apps\",\"pvcName\":\"data\",\"pvName\":\"pvc-1\"}"},"LastBackupName":"backup-a","LastBackupAt":"2026-11-25T02:00:00Z"}"#,
            r#"{"Name":"orphan","Size":"2097152","Labels":null,"LastBackupName":"","LastBackupAt":""}"#
        );
        let v = parse_scan(&text);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].volume, "orphan");
        assert_eq!(v[0].last_backup, None);
        assert_eq!(v[0].namespace, None);
        assert_eq!(v[1].namespace.as_deref(), Some("apps"));
        assert_eq!(v[1].pvc.as_deref(), Some("data"));
        assert_eq!(v[1].last_backup.as_deref(), Some("backup-a"));
        assert_eq!(v[1].size_bytes, 1 << 30);
    }

    #[test]
    fn a_broken_volume_cfg_is_one_rejected_entry_and_the_others_are_read() {
        let text = format!(
            "{MARKER} backupstore/volumes/aa/bb/broken/volume.cfg\n{{not json\n{MARKER} backupstore/volumes/cc/dd/good/volume.cfg\n{}\n",
            r#"{"Name":"good","Size":"1","LastBackupName":"backup-a","LastBackupAt":"2026-11-25T02:00:00Z"}"#
        );
        let v = parse_scan(&text);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].volume, "broken");
        assert!(v[0].rejected.as_deref().unwrap().contains("not valid JSON"));
        assert_eq!(v[1].volume, "good");
        assert_eq!(v[1].rejected, None);
    }

    #[test]
    fn hostile_names_are_rejected_and_printed_harmlessly() {
        let cfg = |name: &str, ns: &str, pvc: &str| {
            let ks = serde_json::json!({"namespace": ns, "pvcName": pvc}).to_string();
            let doc = serde_json::json!({"Name": name, "Size": "1", "Labels": {"KubernetesStatus": ks},
                "LastBackupName": "backup-a", "LastBackupAt": "2026-11-25T02:00:00Z"});
            format!("{MARKER} backupstore/volumes/aa/bb/x/volume.cfg\n{doc}\n")
        };
        let text = [
            cfg("pvc-ok", "apps", "data"),
            // A namespace that would turn a PVC GET into a GET of the unseal Secret.
            cfg("pvc-a", "security/secrets/vault-unseal-key?", "data"),
            cfg("pvc-b", "apps", "../../secrets/x"),
            cfg("pvc-\u{1b}[2Jc", "apps", "data"),
            cfg("PVC-Upper", "apps", "data"),
        ]
        .concat();
        let v = parse_scan(&text);
        let ok: Vec<_> = v.iter().filter(|v| v.rejected.is_none()).collect();
        assert_eq!(ok.len(), 1, "{v:?}");
        assert_eq!(ok[0].volume, "pvc-ok");
        for r in v.iter().filter(|v| v.rejected.is_some()) {
            assert!(r.namespace.is_none() && r.pvc.is_none() && r.last_backup.is_none());
            assert!(!r.volume.chars().any(char::is_control), "{:?}", r.volume);
        }
        assert!(v.iter().any(|r| r.volume == "pvc-\\u{1b}[2Jc"), "{v:?}");
    }
}
