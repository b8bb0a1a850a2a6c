//! Running commands on the server: exit status, stdout and stderr kept apart and streamed to
//! the log line by line; `sudo -n` wrapping; secrets only ever on stdin.

use std::time::Duration;

use anyhow::Result;
use russh::ChannelMsg;

use super::{Remote, RemoteError};

/// What a remote command left behind.
#[derive(Debug)]
pub struct ExecOutput {
    pub status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Quotes a word for the server's POSIX shell.
pub fn shell_quote(word: &str) -> String {
    shlex::try_quote(word)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| format!("'{}'", word.replace('\0', "").replace('\'', r"'\''")))
}

/// Options for one command.
#[derive(Default)]
pub struct ExecOptions<'a> {
    /// Bytes sent on stdin, then EOF. The only way a secret may reach the server.
    pub stdin: Option<&'a [u8]>,
    /// Don't copy the output to the log (for output that could hold a secret).
    pub quiet: bool,
    /// How long the command may run before rebox gives up on it; [`DEFAULT_DEADLINE`] if
    /// not given.
    pub deadline: Option<Duration>,
}

/// The longest any remote command may run (apt on a slow uplink included): past it the
/// command is abandoned and named, never waited on forever.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30 * 60);

impl Remote {
    /// Runs `cmd` as the SSH user.
    pub async fn exec(&self, cmd: &str) -> Result<ExecOutput> {
        self.exec_with(cmd, ExecOptions::default()).await
    }

    /// Runs `cmd` as root through `sudo -n`; a sudo that wants a password is an error.
    pub async fn sudo(&self, cmd: &str) -> Result<ExecOutput> {
        self.sudo_with(cmd, ExecOptions::default()).await
    }

    pub async fn sudo_with(&self, cmd: &str, opts: ExecOptions<'_>) -> Result<ExecOutput> {
        let wrapped = format!("sudo -n -- sh -c {}", shell_quote(cmd));
        let out = self.exec_with(&wrapped, opts).await?;
        if !out.success() && sudo_wants_password(&out.stderr) {
            return Err(RemoteError::SudoNeedsPassword {
                user: self.target.user.clone(),
            }
            .into());
        }
        Ok(out)
    }

    /// Runs `cmd` as root and fails unless it exits 0; returns its stdout.
    pub async fn sudo_ok(&self, cmd: &str) -> Result<String> {
        let out = self.sudo(cmd).await?;
        if !out.success() {
            anyhow::bail!(
                "`{cmd}` failed on {} (exit {}): {}",
                self.target.addr(),
                out.status,
                out.stderr_str().trim()
            );
        }
        Ok(out.stdout_str())
    }

    /// Writes `body` to `path` as root, mode 0600 in a root-only directory made if missing:
    /// sent on stdin, synced, renamed into place, so a reader sees the old file or the new.
    pub async fn write_root_file(&self, path: &str, body: &[u8]) -> Result<()> {
        let tmp = format!("{path}.tmp");
        let script = format!(
            "set -e; umask 077; mkdir -p $(dirname {p}); cat > {t}; sync {t} 2>/dev/null || true; mv -f {t} {p}",
            p = shell_quote(path),
            t = shell_quote(&tmp)
        );
        let out = self
            .sudo_with(
                &script,
                ExecOptions {
                    stdin: Some(body),
                    quiet: true,
                    ..Default::default()
                },
            )
            .await?;
        anyhow::ensure!(
            out.success(),
            "writing {path} on {} failed: {}",
            self.target.addr(),
            out.stderr_str().trim()
        );
        Ok(())
    }

    /// The content of the root-only file `path`, or None when it does not exist.
    pub async fn read_root_file(&self, path: &str) -> Result<Option<String>> {
        let p = shell_quote(path);
        let out = self
            .sudo(&format!(
                "if [ -e {p} ]; then cat {p}; else echo -n absent >&2; fi"
            ))
            .await?;
        if !out.success() {
            anyhow::bail!(
                "reading {path} on {} failed: {}",
                self.target.addr(),
                out.stderr_str().trim()
            );
        }
        if out.stderr_str() == "absent" {
            return Ok(None);
        }
        Ok(Some(out.stdout_str()))
    }

    pub async fn exec_with(&self, cmd: &str, opts: ExecOptions<'_>) -> Result<ExecOutput> {
        tracing::debug!(target: "rebox::remote", "exec: {cmd}");
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.link_error(e, "opening a session channel"))?;
        channel
            .exec(true, cmd)
            .await
            .map_err(|e| self.link_error(e, "starting a command"))?;
        if let Some(input) = opts.stdin {
            channel
                .data_bytes(input.to_vec())
                .await
                .map_err(|e| self.link_error(e, "sending stdin"))?;
        }
        channel
            .eof()
            .await
            .map_err(|e| self.link_error(e, "closing stdin"))?;

        let mut out = ExecOutput {
            status: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        let mut status = None;
        let mut log_out = LineLog::new("stdout", opts.quiet);
        let mut log_err = LineLog::new("stderr", opts.quiet);
        let deadline = opts.deadline.unwrap_or(DEFAULT_DEADLINE);
        let read = async {
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        log_out.feed(&data);
                        out.stdout.extend_from_slice(&data);
                    }
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        log_err.feed(&data);
                        out.stderr.extend_from_slice(&data);
                    }
                    ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        tracing::debug!(target: "rebox::remote", "killed by signal {signal_name:?}");
                        status = Some(128 + 9);
                    }
                    _ => {}
                }
            }
        };
        if tokio::time::timeout(deadline, read).await.is_err() {
            let _ = channel.close().await;
            return Err(RemoteError::CommandTimedOut {
                host: self.target.addr(),
                secs: deadline.as_secs(),
                command: command_summary(cmd),
            }
            .into());
        }
        log_out.flush();
        log_err.flush();
        match status {
            Some(s) => {
                out.status = s;
                tracing::debug!(target: "rebox::remote", "exit status {s}");
                Ok(out)
            }
            None => Err(self.link_error(
                "the command ended without an exit status",
                "running a command",
            )),
        }
    }
}

/// The start of a command for an error message (a script's first line, at most 80 chars).
fn command_summary(cmd: &str) -> String {
    let first = cmd.lines().next().unwrap_or_default();
    let mut short: String = first.chars().take(80).collect();
    if short.len() < cmd.len() {
        short.push('…');
    }
    short
}

fn sudo_wants_password(stderr: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stderr);
    text.contains("a password is required") || text.contains("a terminal is required")
}

/// Copies a byte stream to the debug log one line at a time.
struct LineLog {
    stream: &'static str,
    quiet: bool,
    partial: Vec<u8>,
}

impl LineLog {
    fn new(stream: &'static str, quiet: bool) -> Self {
        LineLog {
            stream,
            quiet,
            partial: Vec::new(),
        }
    }
    fn feed(&mut self, data: &[u8]) {
        if self.quiet {
            return;
        }
        self.partial.extend_from_slice(data);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            tracing::debug!(target: "rebox::remote", "{}: {}", self.stream, String::from_utf8_lossy(&line).trim_end());
        }
    }
    fn flush(&mut self) {
        if !self.quiet && !self.partial.is_empty() {
            tracing::debug!(target: "rebox::remote", "{}: {}", self.stream, String::from_utf8_lossy(&self.partial));
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        for word in ["plain", "with space", "it's", "$HOME `x` \"q\"", ""] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(word)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), word);
        }
    }

    #[test]
    fn sudo_password_prompt_is_recognised() {
        assert!(sudo_wants_password(b"sudo: a password is required\n"));
        assert!(!sudo_wants_password(b"sh: 1: foo: not found\n"));
    }
}
