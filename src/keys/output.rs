//! Writing a backup file so that a crash, a full disk or a mistake never costs the old one.
//!
//! The file is created 0600 under a temporary name in the destination directory (so the
//! final rename stays on one filesystem), written, fsynced, read back and checked by the
//! caller, and only then moved into place: without `--force` by a hard link that fails if the
//! name exists (no race with another writer), with `--force` by an atomic rename. The
//! directory is fsynced afterwards. A temp file left by a failure is removed on drop.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// A file being written; nothing is visible at `path` until [`Pending::commit`].
pub struct Pending {
    path: PathBuf,
    tmp: PathBuf,
    force: bool,
    committed: bool,
}

impl Pending {
    /// Checks that `path` may be written (absent, or `force`) and creates the temp file, so
    /// an unwritable directory is reported before anything is asked or encrypted.
    pub fn create(path: &Path, force: bool) -> Result<Pending> {
        let shown = path.display();
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => bail!("{shown} is a directory; give a file name with -o"),
            Ok(_) if !force => bail!(
                "{shown} already exists; pass --force to replace it (the old file stays untouched \
                 until the new one is verified), or choose another name with -o"
            ),
            _ => {}
        }
        let name = path
            .file_name()
            .ok_or_else(|| anyhow!("{shown} is not a file name"))?
            .to_string_lossy()
            .into_owned();
        let dir = parent(path);
        if !dir.is_dir() {
            bail!(
                "directory {} does not exist; create it first or choose another -o",
                dir.display()
            );
        }
        let tmp = dir.join(format!(
            ".{name}.rebox-tmp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| {
                anyhow!(
                    "cannot write in directory {} ({}); choose a writable place with -o \
                     (is the USB stick mounted read-only?)",
                    dir.display(),
                    e.kind()
                )
            })?;
        Ok(Pending {
            path: path.to_path_buf(),
            tmp,
            force,
            committed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` into the temp file and fsyncs it.
    pub fn write(&self, bytes: &[u8]) -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.tmp)
            .with_context(|| format!("reopening the temporary file for {}", self.path.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {} (disk full?)", self.path.display()))?;
        Ok(())
    }

    /// What actually reached the disk, for the caller to verify before committing.
    pub fn read_back(&self) -> Result<Vec<u8>> {
        fs::read(&self.tmp).with_context(|| format!("reading back {}", self.path.display()))
    }

    /// Moves the verified file into place and fsyncs the directory.
    pub fn commit(mut self) -> Result<()> {
        let shown = self.path.display().to_string();
        if self.force {
            fs::rename(&self.tmp, &self.path).with_context(|| format!("replacing {shown}"))?;
        } else {
            match fs::hard_link(&self.tmp, &self.path) {
                Ok(()) => {
                    let _ = fs::remove_file(&self.tmp);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    bail!("{shown} appeared while rebox was working; nothing was replaced (pass --force to replace it)")
                }
                // Filesystems without hard links (FAT on USB sticks): check, then rename.
                Err(_) => {
                    if self.path.exists() {
                        bail!("{shown} appeared while rebox was working; nothing was replaced");
                    }
                    fs::rename(&self.tmp, &self.path)
                        .with_context(|| format!("creating {shown}"))?;
                }
            }
        }
        self.committed = true;
        if let Ok(d) = File::open(parent(&self.path)) {
            // Makes the new name durable; some filesystems cannot fsync a directory.
            if let Err(e) = d.sync_all() {
                tracing::debug!("fsync of the directory of {shown} failed: {e}");
            }
        }
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_output_is_0600_and_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.age");
        let p = Pending::create(&path, false).unwrap();
        p.write(b"one").unwrap();
        assert_eq!(p.read_back().unwrap(), b"one");
        assert!(!path.exists(), "visible before commit");
        p.commit().unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(Pending::create(&path, false).is_err());
        let p = Pending::create(&path, true).unwrap();
        p.write(b"two").unwrap();
        p.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left behind"
        );
    }

    #[test]
    fn key_output_dropped_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pending::create(&dir.path().join("k.age"), false).unwrap();
        p.write(b"x").unwrap();
        drop(p);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
