//! Uploading a file: SFTP into a staging file named after its sha256 (so an interrupted upload
//! resumes from where it stopped), sha256 checked on the server, then installed with mode and
//! owner under a temporary name and renamed into place (atomic: the destination is either the
//! old file or the complete new one).

use std::path::Path;

use anyhow::{Context, Result};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::OpenFlags;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{shell_quote, Remote};

/// Staging directory, relative to the SSH user's home (SFTP's starting directory).
const STAGING: &str = ".cache/rebox/uploads";

/// One file to put on the server.
pub struct UploadSpec<'a> {
    pub local: &'a Path,
    /// Absolute destination path on the server.
    pub remote: &'a str,
    /// Octal mode, e.g. 0o755.
    pub mode: u32,
    /// `user:group` to own the file.
    pub owner: &'a str,
}

/// What an upload did, for reports and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadReport {
    pub sha256: String,
    pub size: u64,
    /// Bytes already on the server from an earlier, interrupted upload.
    pub resumed_from: u64,
}

/// sha256 of a local file, hex.
pub async fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

impl Remote {
    /// Uploads `spec.local` to `spec.remote`, verified and installed atomically.
    pub async fn upload(&self, spec: &UploadSpec<'_>) -> Result<UploadReport> {
        self.upload_with_progress(spec, &|_, _| {}).await
    }

    /// [`Remote::upload`], calling `progress(bytes on the server, size)` as bytes go out (the
    /// caller draws the bar: this layer shows nothing).
    pub async fn upload_with_progress(
        &self,
        spec: &UploadSpec<'_>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<UploadReport> {
        let (sha256, size) = sha256_file(spec.local).await?;
        let staged = format!("{STAGING}/{sha256}.part");
        let out = self.exec(&format!("mkdir -p -m 700 {STAGING}")).await?;
        if !out.success() {
            anyhow::bail!(
                "cannot create ~/{STAGING} on the server: {}",
                out.stderr_str().trim()
            );
        }

        let resumed_from = self
            .send_staged(spec.local, &staged, size, progress)
            .await?;
        let remote_sum = self
            .exec(&format!("sha256sum {}", shell_quote(&staged)))
            .await?;
        let remote_sum = remote_sum.stdout_str();
        if remote_sum.split_whitespace().next() != Some(sha256.as_str()) {
            // A corrupt partial upload must not poison the next attempt.
            self.exec(&format!("rm -f {}", shell_quote(&staged)))
                .await?;
            anyhow::bail!(crate::next::hinted(format!("the uploaded copy of {} does not match its sha256 on the server; it was deleted", spec.local.display()), "rerun to upload it again"));
        }
        self.install_staged(&staged, spec).await?;
        Ok(UploadReport {
            sha256,
            size,
            resumed_from,
        })
    }

    /// Writes the local file into the staging file, continuing after any bytes already there.
    /// Returns the offset it resumed from.
    async fn send_staged(
        &self,
        local: &Path,
        staged: &str,
        size: u64,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<u64> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.link_error(e, "opening the SFTP channel"))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| self.link_error(e, "starting SFTP"))?;
        // Large writes with many in flight: OpenSSH's sftp-server takes up to 256 KiB per write,
        // and a deep pipeline keeps the link busy while acknowledgements travel back.
        let config = russh_sftp::client::Config {
            max_write_packet_len: 255 * 1024,
            max_concurrent_writes: 64,
            ..Default::default()
        };
        let sftp = SftpSession::new_with_config(channel.into_stream(), config)
            .await
            .map_err(|e| self.link_error(e, "starting SFTP"))?;

        let existing = match sftp.metadata(staged).await {
            Ok(meta) => meta.len(),
            Err(_) => 0,
        };
        let offset = if existing <= size { existing } else { 0 };
        if offset == size && size > 0 {
            return Ok(offset);
        }
        let flags = if offset == 0 {
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE
        } else {
            OpenFlags::WRITE
        };
        let mut remote = sftp
            .open_with_flags(staged, flags)
            .await
            .map_err(|e| self.link_error(e, "opening the staging file"))?;
        remote
            .seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| self.link_error(e, "seeking in the staging file"))?;
        let mut file = tokio::fs::File::open(local).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        if offset > 0 {
            tracing::info!(
                "resuming the upload of {} at byte {offset} of {size}",
                local.display()
            );
        }

        let mut sent = offset;
        progress(sent, size);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            remote
                .write_all(&buf[..n])
                .await
                .map_err(|e| self.link_error(e, "writing to the server"))?;
            sent += n as u64;
            progress(sent, size);
        }
        remote
            .shutdown()
            .await
            .map_err(|e| self.link_error(e, "finishing the upload"))?;
        let _ = sftp.close().await;
        Ok(offset)
    }

    /// Installs the verified staged file: owner and mode set on it, moved next to the
    /// destination under a temporary name, synced, then renamed into place (atomic). Moving,
    /// not copying, keeps the bytes whose sha256 was just checked.
    async fn install_staged(&self, staged: &str, spec: &UploadSpec<'_>) -> Result<()> {
        let home = self.exec("printf %s \"$HOME\"").await?.stdout_str();
        let src = format!("{home}/{staged}");
        let dest = spec.remote;
        let tmp = format!("{dest}.rebox-new");
        let (owner, group) = spec
            .owner
            .split_once(':')
            .unwrap_or((spec.owner, spec.owner));
        let script = format!(
            "set -e; mkdir -p \"$(dirname {d})\"; chown {own}:{grp} {s}; chmod {mode:o} {s}; mv -f {s} {t}; \
             sync {t} 2>/dev/null || sync; mv -f {t} {d}",
            d = shell_quote(dest),
            t = shell_quote(&tmp),
            s = shell_quote(&src),
            mode = spec.mode,
            own = shell_quote(owner),
            grp = shell_quote(group),
        );
        let out = self.sudo(&script).await?;
        if !out.success() {
            anyhow::bail!(
                "installing {dest} on the server failed: {}",
                out.stderr_str().trim()
            );
        }
        Ok(())
    }
}
