//! Shared helpers for the `rebox key` integration tests: a scratch directory, key
//! generation with the real `age-keygen` / `ssh-keygen`, and a pseudo-terminal runner so
//! passphrases are typed on a terminal exactly as an operator would (never passed as
//! arguments or environment variables).

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Two distinctive unseal key shares; any appearance of them in output is a leak.
pub const SHARE1: &str = "dGVzdC1zaGFyZS1vbmUtTkVWRVItTE9HLU1FLTQyNDI0Mg==";
pub const SHARE2: &str = "dGVzdC1zaGFyZS10d28tTkVWRVItTE9HLU1FLTk5OTk5OQ==";
/// A passphrase strong enough not to trigger the weak-passphrase warning.
pub const PASS: &str = "orbit-cactus-velvet-harbor-7";

/// A scratch directory used as the working directory and config home, so no rebox.toml
/// of the machine leaks into a test.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The real `rebox` binary, run inside the scratch directory.
    pub fn rebox(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("rebox").expect("rebox binary");
        c.current_dir(self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("REBOX_LOG")
            .env_remove("REBOX_CONFIG");
        c
    }

    /// The same binary as a plain `std::process::Command` (for the pty runner).
    pub fn rebox_std(&self) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("rebox"));
        c.current_dir(self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("REBOX_LOG")
            .env_remove("REBOX_CONFIG");
        c
    }

    /// A new age X25519 identity: (identity file, recipient).
    pub fn age_identity(&self, name: &str) -> (PathBuf, String) {
        let path = self.path(name);
        let out = Command::new(age_tool("age-keygen"))
            .arg("-o")
            .arg(&path)
            .output()
            .expect("age-keygen");
        assert!(out.status.success(), "age-keygen failed");
        let r = Command::new(age_tool("age-keygen"))
            .arg("-y")
            .arg(&path)
            .output()
            .expect("age-keygen -y");
        (
            path,
            String::from_utf8(r.stdout).unwrap().trim().to_string(),
        )
    }

    /// A new SSH key without passphrase: (private key file, public key file).
    pub fn ssh_key(&self, name: &str, kind: &str) -> (PathBuf, PathBuf) {
        let path = self.path(name);
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-t", kind, "-N", "", "-C", "test@rebox", "-f"])
            .arg(&path);
        if kind == "rsa" {
            c.args(["-b", "2048"]);
        }
        let out = c.output().expect("ssh-keygen");
        assert!(out.status.success(), "ssh-keygen failed");
        let mut public = path.clone().into_os_string();
        public.push(".pub");
        (path, PathBuf::from(public))
    }

    /// Files in the scratch directory, sorted (to prove nothing extra was written).
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// Path of a tool from Debian's `age` package, with a clear failure if it is missing.
pub fn age_tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("`{name}` not found: install Debian's `age` package (scripts/setup does)");
}

/// Exports `shares` to an X25519 recipient and returns (backup path, identity path).
pub fn export_x25519(s: &Scratch, name: &str, extra_args: &[&str]) -> (PathBuf, PathBuf) {
    let (id, recipient) = s.age_identity(&format!("{name}.key"));
    let out = s.path(name);
    s.rebox()
        .args(["key", "export", "--from-stdin", "--cluster", "lab", "-r"])
        .arg(&recipient)
        .arg("-i")
        .arg(&id)
        .arg("-o")
        .arg(&out)
        .args(extra_args)
        .write_stdin(format!("{SHARE1}\n"))
        .assert()
        .success();
    (out, id)
}

/// What a process run on a pseudo-terminal did.
pub struct PtyOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Everything written to the terminal (prompts; echoed input if echo were on).
    pub tty: String,
}

impl PtyOutput {
    pub fn all(&self) -> String {
        format!("{}{}{}", self.stdout, self.stderr, self.tty)
    }
}

/// Runs `cmd` with a new pseudo-terminal as its controlling terminal (`/dev/tty`).
/// `stdin` feeds a pipe (the key) or, when `None`, stdin is the terminal too. `script`
/// lists (prompt text to wait for, line to type). With `stdout_tty`, stdout is the terminal.
#[allow(unsafe_code)] // pre_exec needs it: setsid and the controlling tty between fork and exec
pub fn run_pty(
    mut cmd: Command,
    stdin: Option<&str>,
    stdout_tty: bool,
    script: &[(&str, &str)],
) -> PtyOutput {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master =
        openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(name.to_str().unwrap())
        .expect("open pty slave");
    let slave_fd = slave.as_raw_fd();
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setsid().map_err(std::io::Error::from)?;
            rustix::process::ioctl_tiocsctty(BorrowedFd::borrow_raw(slave_fd))
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    cmd.stdin(match stdin {
        Some(_) => Stdio::piped(),
        None => Stdio::from(slave.try_clone().unwrap()),
    });
    cmd.stdout(if stdout_tty {
        Stdio::from(slave.try_clone().unwrap())
    } else {
        Stdio::piped()
    });
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn under pty");
    // Keep our slave fd open until the child is gone: with no slave open, reading the
    // master fails (EIO), e.g. before the child opens /dev/tty. Dropping it afterwards
    // is what ends the master reader.
    drop(cmd);

    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let data = data.to_string();
        std::thread::spawn(move || {
            let _ = pipe.write_all(data.as_bytes());
        });
    }
    let collect = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out_t = child.stdout.take().map(|o| collect(Box::new(o)));
    let err_t = collect(Box::new(child.stderr.take().unwrap()));

    let transcript = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut master_w = File::from(master);
    let mut master_r = master_w.try_clone().unwrap();
    let t2 = transcript.clone();
    let tty_t = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match master_r.read(&mut buf) {
                Ok(0) | Err(_) => break, // EIO once the child has closed the terminal
                Ok(n) => t2.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(240);
    let mut pos = 0;
    for (prompt, reply) in script {
        loop {
            let seen = String::from_utf8_lossy(&transcript.lock().unwrap()[pos..]).into_owned();
            if let Some(i) = seen.find(prompt) {
                pos += i + prompt.len();
                break;
            }
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "prompt {prompt:?} never came; terminal so far:\n{}",
                    String::from_utf8_lossy(&transcript.lock().unwrap())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        master_w.write_all(reply.as_bytes()).unwrap();
        master_w.write_all(b"\n").unwrap();
    }
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "process under pty did not finish; terminal:\n{}",
                String::from_utf8_lossy(&transcript.lock().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(slave);
    let stderr = err_t.join().unwrap();
    let stdout = out_t.map(|t| t.join().unwrap()).unwrap_or_default();
    drop(master_w);
    let _ = tty_t.join();
    let tty = String::from_utf8_lossy(&transcript.lock().unwrap()).into_owned();
    PtyOutput {
        status,
        stdout,
        stderr,
        tty,
    }
}

/// Runs `cmd` in a new session without a controlling terminal (as in CI or cron), even
/// when the tests themselves run in a terminal.
#[allow(unsafe_code)] // pre_exec needs it: setsid between fork and exec
pub fn run_without_tty(mut cmd: Command, stdin: &str) -> std::process::Output {
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
