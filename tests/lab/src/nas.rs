//! The lab's NAS: a directory in Longhorn's backupstore layout, written by [`NasFixture`]
//! and read by the Longhorn stand-in ([`Backupstore`]).
//!
//! Contract followed: `longhorn/backupstore` (`config.go`, `deltablock.go`, `backupstore.go`):
//! - `<root>/backupstore/volumes/<cs[0:2]>/<cs[2:4]>/<volume>/volume.cfg`, `cs` =
//!   [`checksum`] of the volume name — JSON
//!   of the store's `Volume` struct (`Name`, `Size` as a string, `Labels`, `CreatedTime`,
//!   `LastBackupName`, `LastBackupAt`, `BlockCount` as a string, `BackingImageName`,
//!   `BackingImageChecksum`, `CompressionMethod`, `StorageClassName`, `DataEngine`);
//! - `.../<volume>/backups/backup_<name>.cfg` — JSON of `Backup` (`Name`, `VolumeName`,
//!   `SnapshotName`, `SnapshotCreatedAt`, `CreatedTime`, `Size`, `Labels`, `IsIncremental`,
//!   `CompressionMethod`, `Blocks: [{Offset, BlockChecksum}]`); a backup whose
//!   `CreatedTime` is empty is still in progress;
//! - `.../<volume>/blocks/<cs[0:2]>/<cs[2:4]>/<cs>.blk` — one 2 MiB block, named by the
//!   [`checksum`] of its uncompressed content; all-zero blocks are not stored.
//!
//! [`checksum`] is backupstore's `util.GetChecksum` (`util/util.go`): the hex of a SHA-512,
//! cut to its first 64 characters (`PreservedChecksumLength`); `getVolumePath` (`config.go`)
//! and `getBlockFilePath` (`util.go`) take its first two and next two characters as the
//! directory levels.
//!
//! Simplifications (said here so nobody mistakes them for Longhorn's): blocks are stored
//! uncompressed (`CompressionMethod: "none"`, which Longhorn also supports); and since the
//! lab's volumes are directories, not block devices, a volume's "device content" is a small
//! archive of its files ([`encode_image`]: magic, then path/mode/length/data records),
//! zero-padded to whole blocks. A restore checks every block's checksum as Longhorn does and
//! fails on a mismatch, so a flipped byte ([`NasFixture::corrupt`], [`corrupt_volume`])
//! makes the restore fail the way a corrupted backupstore does.
//!
//! Backup URLs are `<target>?backup=<name>&volume=<volume>` (Go `url.Values.Encode`, keys
//! sorted). The NFS export path of the lab's target URL is this directory: see
//! `k3s::controllers::longhorn` for how `nfs://host:/export` maps to a local path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256, Sha512};

/// Longhorn's `DEFAULT_BLOCK_SIZE` (2 MiB).
pub const BLOCK_SIZE: usize = 2 << 20;
const IMAGE_MAGIC: &[u8] = b"REBOX-LAB-VOLUME-IMAGE-1\n";

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// backupstore's `util.GetChecksum`: hex SHA-512, first 64 characters.
pub fn checksum(b: &[u8]) -> String {
    let mut cs = hex::encode(Sha512::digest(b));
    cs.truncate(64);
    cs
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `volume.cfg`.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeCfg {
    pub name: String,
    #[serde(with = "string_i64")]
    pub size: i64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub created_time: String,
    #[serde(default)]
    pub last_backup_name: String,
    #[serde(default)]
    pub last_backup_at: String,
    #[serde(default, with = "string_i64")]
    pub block_count: i64,
    #[serde(default)]
    pub backing_image_name: String,
    #[serde(default)]
    pub backing_image_checksum: String,
    #[serde(default)]
    pub compression_method: String,
    #[serde(default)]
    pub storage_class_name: String,
    #[serde(default)]
    pub data_engine: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct BlockMapping {
    pub offset: i64,
    pub block_checksum: String,
}

/// `backups/backup_<name>.cfg`.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct BackupCfg {
    pub name: String,
    pub volume_name: String,
    #[serde(default)]
    pub snapshot_name: String,
    #[serde(default)]
    pub snapshot_created_at: String,
    #[serde(default)]
    pub created_time: String,
    #[serde(with = "string_i64")]
    pub size: i64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub is_incremental: bool,
    #[serde(default)]
    pub compression_method: String,
    #[serde(default)]
    pub blocks: Vec<BlockMapping>,
}

mod string_i64 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(0);
        }
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A backupstore rooted at a directory (the NFS export).
#[derive(Clone, Debug)]
pub struct Backupstore {
    pub root: PathBuf,
}

impl Backupstore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Backupstore { root: root.into() }
    }

    /// `backupstore/volumes/<xx>/<yy>/<volume>`.
    pub fn volume_dir(&self, volume: &str) -> PathBuf {
        let cs = checksum(volume.as_bytes());
        self.root
            .join("backupstore/volumes")
            .join(&cs[0..2])
            .join(&cs[2..4])
            .join(volume)
    }

    pub fn backup_cfg_path(&self, volume: &str, backup: &str) -> PathBuf {
        self.volume_dir(volume)
            .join("backups")
            .join(format!("backup_{backup}.cfg"))
    }

    pub fn block_path(&self, volume: &str, checksum: &str) -> PathBuf {
        self.volume_dir(volume)
            .join("blocks")
            .join(&checksum[0..2])
            .join(&checksum[2..4])
            .join(format!("{checksum}.blk"))
    }

    /// Volume names found by walking the two hash levels (as `getVolumeNames` does).
    pub fn list_volumes(&self) -> anyhow::Result<Vec<String>> {
        let base = self.root.join("backupstore/volumes");
        let mut out = vec![];
        let rd = match std::fs::read_dir(&base) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("listing {}", base.display())),
        };
        for l1 in rd.flatten() {
            for l2 in std::fs::read_dir(l1.path()).into_iter().flatten().flatten() {
                for v in std::fs::read_dir(l2.path()).into_iter().flatten().flatten() {
                    if v.path().join("volume.cfg").is_file() {
                        out.push(v.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn load_volume(&self, volume: &str) -> anyhow::Result<VolumeCfg> {
        let p = self.volume_dir(volume).join("volume.cfg");
        let text = std::fs::read(&p)
            .with_context(|| format!("cannot find {} in backupstore", p.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("decoding {}", p.display()))
    }

    pub fn list_backups(&self, volume: &str) -> anyhow::Result<Vec<String>> {
        let dir = self.volume_dir(volume).join("backups");
        let mut out = vec![];
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(name) = n
                .strip_prefix("backup_")
                .and_then(|n| n.strip_suffix(".cfg"))
            {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn load_backup(&self, volume: &str, backup: &str) -> anyhow::Result<BackupCfg> {
        let p = self.backup_cfg_path(volume, backup);
        let text = std::fs::read(&p)
            .with_context(|| format!("cannot find {} in backupstore", p.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("decoding {}", p.display()))
    }

    /// Reads one block and checks its checksum, failing with Longhorn's wording.
    pub fn read_block(&self, volume: &str, checksum: &str) -> anyhow::Result<Vec<u8>> {
        let p = self.block_path(volume, checksum);
        let data = std::fs::read(&p)
            .with_context(|| format!("failed to read block {checksum} from backupstore"))?;
        let got = self::checksum(&data);
        if got != checksum {
            bail!("failed to verify block {checksum}: checksum verification failed for block {checksum} (got {got})");
        }
        Ok(data)
    }
}

/// The backup label holding a volume's recurring jobs (longhorn-manager `types.VolumeRecurringJobInfoLabel`).
pub const VOLUME_RECURRING_JOB_INFO: &str = "VolumeRecurringJobInfo";

/// `KubernetesStatus` as Longhorn stores it in a backup's labels.
pub fn kubernetes_status_label(namespace: &str, pvc: &str, pv: &str, at: &str) -> String {
    json!({
        "pvName": pv, "pvStatus": "Bound", "namespace": namespace, "pvcName": pvc,
        "lastPVCRefAt": "", "workloadsStatus": [{"podName": format!("{pvc}-pod"), "podStatus": "Running", "workloadName": "", "workloadType": ""}],
        "lastPodRefAt": at,
    })
    .to_string()
}

/// Serializes the regular files under `dir` (sorted, relative paths) into a volume image.
pub fn encode_dir(dir: &Path) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec![];
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, u32, Vec<u8>)>) -> anyhow::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(d)
            .with_context(|| format!("reading {}", d.display()))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let ft = e.file_type()?;
            if ft.is_dir() {
                walk(base, &p, out)?;
            } else if ft.is_file() {
                let rel = p.strip_prefix(base)?.to_string_lossy().into_owned();
                let mode = e.metadata()?.permissions().mode() & 0o7777;
                out.push((rel, mode, std::fs::read(&p)?));
            }
        }
        Ok(())
    }
    walk(dir, dir, &mut files)?;
    Ok(encode_image(&files))
}

/// A volume image from `(relative path, mode, content)` records.
pub fn encode_image(files: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = IMAGE_MAGIC.to_vec();
    out.extend((files.len() as u32).to_le_bytes());
    for (path, mode, data) in files {
        out.extend((path.len() as u32).to_le_bytes());
        out.extend(path.as_bytes());
        out.extend(mode.to_le_bytes());
        out.extend((data.len() as u64).to_le_bytes());
        out.extend(data);
    }
    out
}

/// Decodes a volume image (trailing zero padding allowed); an image of only zeros is an
/// empty filesystem.
pub fn decode_image(img: &[u8]) -> anyhow::Result<Vec<(String, u32, Vec<u8>)>> {
    if img.iter().all(|b| *b == 0) {
        return Ok(vec![]);
    }
    let Some(mut rest) = img.strip_prefix(IMAGE_MAGIC) else {
        bail!("volume image has no lab filesystem header");
    };
    fn take<'a>(r: &mut &'a [u8], n: usize) -> anyhow::Result<&'a [u8]> {
        if r.len() < n {
            bail!("volume image truncated");
        }
        let (a, b) = r.split_at(n);
        *r = b;
        Ok(a)
    }
    let count = u32::from_le_bytes(take(&mut rest, 4)?.try_into()?);
    let mut out = vec![];
    for _ in 0..count {
        let pl = u32::from_le_bytes(take(&mut rest, 4)?.try_into()?) as usize;
        let path = String::from_utf8(take(&mut rest, pl)?.to_vec())?;
        if path.starts_with('/') || path.split('/').any(|c| c == ".." || c.is_empty()) {
            bail!("volume image holds an unsafe path {path:?}");
        }
        let mode = u32::from_le_bytes(take(&mut rest, 4)?.try_into()?);
        let dl = u64::from_le_bytes(take(&mut rest, 8)?.try_into()?) as usize;
        out.push((path, mode, take(&mut rest, dl)?.to_vec()));
    }
    Ok(out)
}

/// Writes decoded files under `dir` (which must exist and be empty).
pub fn write_files(dir: &Path, files: &[(String, u32, Vec<u8>)]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for (path, mode, data) in files {
        let p = dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
    }
    Ok(())
}

/// What a fixture volume holds.
#[derive(Clone, Debug)]
pub enum VolumeData {
    /// The regular files of a directory (e.g. a Vault data dir).
    Dir(PathBuf),
    /// Files given inline: `(relative path, content)`, mode 0644.
    Files(Vec<(String, Vec<u8>)>),
}

impl From<&Path> for VolumeData {
    fn from(p: &Path) -> Self {
        VolumeData::Dir(p.to_path_buf())
    }
}
impl From<PathBuf> for VolumeData {
    fn from(p: PathBuf) -> Self {
        VolumeData::Dir(p)
    }
}
impl From<Vec<(String, Vec<u8>)>> for VolumeData {
    fn from(f: Vec<(String, Vec<u8>)>) -> Self {
        VolumeData::Files(f)
    }
}
impl From<&[u8]> for VolumeData {
    /// One file, `data.bin`.
    fn from(b: &[u8]) -> Self {
        VolumeData::Files(vec![("data.bin".into(), b.to_vec())])
    }
}

impl VolumeData {
    fn image(&self) -> anyhow::Result<Vec<u8>> {
        match self {
            VolumeData::Dir(d) => encode_dir(d),
            VolumeData::Files(f) => Ok(encode_image(
                &f.iter()
                    .map(|(p, d)| (p.clone(), 0o644, d.clone()))
                    .collect::<Vec<_>>(),
            )),
        }
    }
}

struct FixtureBackup {
    data: VolumeData,
    at: DateTime<Utc>,
}

struct FixtureVolume {
    name: String,
    namespace: String,
    pvc: String,
    size: i64,
    backups: Vec<FixtureBackup>,
    corrupt: bool,
    access_mode: String,
    recurring_jobs: Option<serde_json::Value>,
}

/// Builds a NAS directory: `NasFixture::new(dir).volume("vault-data-lh", "security",
/// "vault-data-lh", vault_dir, t).build()`. Calling `volume` again with the same name adds
/// an older or newer backup of that volume (the newest is `LastBackupName`).
pub struct NasFixture {
    root: PathBuf,
    volumes: Vec<FixtureVolume>,
}

/// What [`NasFixture::build`] wrote.
#[derive(Clone, Debug)]
pub struct BuiltNas {
    pub root: PathBuf,
    pub volumes: Vec<BuiltVolume>,
}

#[derive(Clone, Debug)]
pub struct BuiltVolume {
    pub name: String,
    pub namespace: String,
    pub pvc: String,
    /// The PV name recorded in `KubernetesStatus` (`pvc-<hash>`, as dynamic provisioning names them).
    pub pv: String,
    pub size: i64,
    /// Oldest first.
    pub backups: Vec<BuiltBackup>,
}

#[derive(Clone, Debug)]
pub struct BuiltBackup {
    pub name: String,
    pub created: String,
}

impl BuiltNas {
    pub fn volume(&self, name: &str) -> &BuiltVolume {
        self.volumes
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no fixture volume {name}"))
    }
}

impl BuiltVolume {
    pub fn last_backup(&self) -> &BuiltBackup {
        self.backups.last().expect("a fixture volume has a backup")
    }
}

/// Default fixture volume size (1 GiB, as Longhorn volumes are commonly sized).
pub const DEFAULT_SIZE: i64 = 1 << 30;

impl NasFixture {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        NasFixture {
            root: root.into(),
            volumes: vec![],
        }
    }

    pub fn volume(
        mut self,
        name: &str,
        namespace: &str,
        pvc: &str,
        data: impl Into<VolumeData>,
        backed_up_at: DateTime<Utc>,
    ) -> Self {
        let b = FixtureBackup {
            data: data.into(),
            at: backed_up_at,
        };
        if let Some(v) = self.volumes.iter_mut().find(|v| v.name == name) {
            v.backups.push(b);
        } else {
            self.volumes.push(FixtureVolume {
                name: name.into(),
                namespace: namespace.into(),
                pvc: pvc.into(),
                size: DEFAULT_SIZE,
                backups: vec![b],
                corrupt: false,
                access_mode: "rwo".into(),
                recurring_jobs: None,
            });
        }
        self
    }

    /// Sets a volume's size in bytes (default [`DEFAULT_SIZE`]).
    pub fn size(mut self, name: &str, bytes: i64) -> Self {
        self.volumes
            .iter_mut()
            .find(|v| v.name == name)
            .expect("size() after volume()")
            .size = bytes;
        self
    }

    /// The access mode the volume had (`rwo`, `rwx`, `rwop`), recorded as Longhorn does in
    /// every backup's `longhorn.io/volume-access-mode` label (default `rwo`).
    pub fn access_mode(mut self, name: &str, mode: &str) -> Self {
        self.volumes
            .iter_mut()
            .find(|v| v.name == name)
            .expect("access_mode() after volume()")
            .access_mode = mode.into();
        self
    }

    /// The volume's own recurring jobs and groups, recorded as Longhorn's backup monitor does
    /// (`engineapi/backup_monitor.go`): the label `VolumeRecurringJobInfo`, the JSON of a map
    /// job name → `{"jobSpec": RecurringJobSpec, "fromJob": bool, "fromGroup": [groups]}`,
    /// on the newest backup and so in `volume.cfg`.
    pub fn recurring_jobs(mut self, name: &str, info: serde_json::Value) -> Self {
        self.volumes
            .iter_mut()
            .find(|v| v.name == name)
            .expect("recurring_jobs() after volume()")
            .recurring_jobs = Some(info);
        self
    }

    /// Flips bytes in a block of the volume's newest backup after writing it.
    pub fn corrupt(mut self, name: &str) -> Self {
        self.volumes
            .iter_mut()
            .find(|v| v.name == name)
            .expect("corrupt() after volume()")
            .corrupt = true;
        self
    }

    pub fn build(self) -> anyhow::Result<BuiltNas> {
        let store = Backupstore::new(&self.root);
        let mut built = vec![];
        for v in self.volumes {
            let pv = format!(
                "pvc-{}",
                &sha256_hex(format!("{}/{}", v.namespace, v.pvc).as_bytes())[..32]
            );
            let vdir = store.volume_dir(&v.name);
            std::fs::create_dir_all(vdir.join("backups"))?;
            let mut backups = v.backups;
            backups.sort_by_key(|b| b.at);
            let mut out = vec![];
            let mut blocks_total = std::collections::BTreeSet::new();
            let mut last_labels = BTreeMap::new();
            for b in &backups {
                let created = rfc3339(b.at);
                let name = format!(
                    "backup-{}",
                    &sha256_hex(format!("{}@{created}", v.name).as_bytes())[..16]
                );
                let img = b.data.image()?;
                if img.len() as i64 > v.size {
                    bail!(
                        "fixture volume {}: data ({} bytes) larger than the volume ({} bytes)",
                        v.name,
                        img.len(),
                        v.size
                    );
                }
                let mut blocks = vec![];
                for (i, chunk) in img.chunks(BLOCK_SIZE).enumerate() {
                    let mut blk = chunk.to_vec();
                    blk.resize(BLOCK_SIZE, 0);
                    let cs = checksum(&blk);
                    let p = store.block_path(&v.name, &cs);
                    std::fs::create_dir_all(p.parent().unwrap())?;
                    std::fs::write(&p, &blk)?;
                    blocks_total.insert(cs.clone());
                    blocks.push(BlockMapping {
                        offset: (i * BLOCK_SIZE) as i64,
                        block_checksum: cs,
                    });
                }
                let mut labels = BTreeMap::new();
                labels.insert(
                    "KubernetesStatus".to_string(),
                    kubernetes_status_label(&v.namespace, &v.pvc, &pv, &created),
                );
                labels.insert(
                    "longhorn.io/volume-access-mode".to_string(),
                    v.access_mode.clone(),
                );
                if let Some(info) = &v.recurring_jobs {
                    labels.insert(VOLUME_RECURRING_JOB_INFO.to_string(), info.to_string());
                }
                let cfg = BackupCfg {
                    name: name.clone(),
                    volume_name: v.name.clone(),
                    snapshot_name: format!(
                        "snap-{}",
                        &sha256_hex(format!("{name}/snap").as_bytes())[..12]
                    ),
                    snapshot_created_at: created.clone(),
                    created_time: created.clone(),
                    size: (blocks.len() * BLOCK_SIZE) as i64,
                    labels: labels.clone(),
                    is_incremental: false,
                    compression_method: "none".into(),
                    blocks,
                };
                std::fs::write(
                    store.backup_cfg_path(&v.name, &name),
                    serde_json::to_vec(&cfg)?,
                )?;
                last_labels = labels;
                out.push(BuiltBackup { name, created });
            }
            let last = out
                .last()
                .cloned()
                .context("fixture volume without backup")?;
            if v.corrupt {
                let cfg = store.load_backup(&v.name, &last.name)?;
                let cs = &cfg.blocks.first().context("empty backup")?.block_checksum;
                let p = store.block_path(&v.name, cs);
                let mut data = std::fs::read(&p)?;
                for b in data.iter_mut().take(64).skip(32) {
                    *b ^= 0xa5;
                }
                std::fs::write(&p, data)?;
            }
            let vcfg = VolumeCfg {
                name: v.name.clone(),
                size: v.size,
                labels: last_labels,
                created_time: out[0].created.clone(),
                last_backup_name: last.name.clone(),
                last_backup_at: last.created.clone(),
                block_count: blocks_total.len() as i64,
                compression_method: "none".into(),
                storage_class_name: "longhorn".into(),
                data_engine: "v1".into(),
                ..Default::default()
            };
            std::fs::write(vdir.join("volume.cfg"), serde_json::to_vec(&vcfg)?)?;
            built.push(BuiltVolume {
                name: v.name,
                namespace: v.namespace,
                pvc: v.pvc,
                pv,
                size: v.size,
                backups: out,
            });
        }
        Ok(BuiltNas {
            root: self.root,
            volumes: built,
        })
    }
}

/// Corrupts an existing NAS volume's newest backup in place (flips bytes in its first block).
pub fn corrupt_volume(root: &Path, volume: &str) -> anyhow::Result<()> {
    let store = Backupstore::new(root);
    let v = store.load_volume(volume)?;
    let b = store.load_backup(volume, &v.last_backup_name)?;
    let cs = &b
        .blocks
        .first()
        .context("backup without blocks")?
        .block_checksum;
    let p = store.block_path(volume, cs);
    let mut data = std::fs::read(&p)?;
    for x in data.iter_mut().take(64).skip(32) {
        *x ^= 0xa5;
    }
    std::fs::write(&p, data)?;
    Ok(())
}
