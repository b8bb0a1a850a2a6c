//! Lab server (issue 2): a real server stand-in on this machine.
//!
//! A lab server is
//! - a network namespace `rebox-lab-N` with the address `10.77.N.2/24` on `eth0`, one end of a
//!   veth pair whose host end `rlabN` has `10.77.N.1/24` (no default route: the lab can reach
//!   the host and nothing else);
//! - its own hostname (UTS namespace) and its own PID namespace, whose PID 1 is the *holder*
//!   (`server/holder.sh`);
//! - its own root file system: an overlay with the host's `/` as the lower dir and an upper dir
//!   on a tmpfs the host mounts at `<scratch>/fs`, so every write inside lands in
//!   `<scratch>/fs/upper` (see [`LabServer::path`]) and never on the host. (An upper dir on the
//!   host's root file system is refused by overlayfs as overlapping the lower dir; a separate
//!   tmpfs is not.) The holder `pivot_root`s into the overlay with a fresh /proc and /sys, /dev
//!   bound and a tmpfs on /run, and drops the host's mount tree from its (private) mount
//!   namespace, so nothing leaks onto the host;
//! - Debian's real `/usr/sbin/sshd` on port 22 with a fresh ed25519 host key per start, a real
//!   `homelab` user (created inside the overlay) with NOPASSWD sudo and a per-lab ed25519 client
//!   key, and an Ubuntu 26.04 `/etc/os-release` (`server/setup.sh`).
//!
//! Starting takes well under a second; any number of labs can run at once (up to 254): a lab
//! claims its index N (round-robin) under a lock by creating `/run/rebox-lab/rebox-lab-N/` and
//! then `ip netns add rebox-lab-N`. [`LabServer`]'s `Drop` removes everything (processes, mounts,
//! veth, netns, scratch dir), also when a test panics. Labs of crashed processes are removed by
//! [`cleanup_stale`], which [`LabServer::start`] calls first.
//!
//! State of each lab is kept in `/run/rebox-lab/<netns>/state.json` ([`LabInfo`]) so that other
//! processes (the `rebox-lab` binary, `scripts/lab-server`) can [`LabServer::attach`] to it.
//!
//! Requires root and: iproute2 (`ip`), util-linux (`unshare`, `nsenter`, `mount`, `umount`,
//! `pivot_root`), openssh-server, openssh-client (`ssh-keygen`, `ssh`), sudo, passwd
//! (`useradd`, `chpasswd`), procps (`kill`).
//!
//! ```no_run
//! use rebox_lab::server::{LabOptions, LabServer};
//! let lab = LabServer::start(LabOptions::default()).unwrap();
//! let out = lab.ssh("sudo -n id -u").output().unwrap(); // system ssh, checked host key
//! assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
//! lab.run_as_root_ok("touch /usr/local/bin/k3s").unwrap();
//! assert!(lab.path("/usr/local/bin/k3s").exists());
//! // dropped: everything is gone
//! ```

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The login user of every lab server.
pub const LAB_USER: &str = "homelab";
/// The password of [`LAB_USER`] (only useful with `sudo_nopasswd: false`; SSH password logins
/// are disabled).
pub const LAB_PASSWORD: &str = "homelab";
/// Where the state of running labs is kept (one directory per lab, named after its netns).
pub const REGISTRY_DIR: &str = "/run/rebox-lab";
/// Name prefix of the labs' network namespaces.
pub const NETNS_PREFIX: &str = "rebox-lab-";

const HOLDER_SH: &str = include_str!("server/holder.sh");
const SETUP_SH: &str = include_str!("server/setup.sh");
/// Stand-ins for systemd's tools (the lab has no systemd), installed over /usr/bin's.
const SYSTEMCTL_SH: &str = include_str!("server/systemctl.sh");
const TIMEDATECTL_SH: &str = include_str!("server/timedatectl.sh");
/// A local apt repository with stand-ins for the packages a rebuild installs.
const APT_MIRROR_SH: &str = include_str!("server/apt-mirror.sh");
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `/etc/os-release` of Ubuntu 26.04 LTS, the default of every lab.
pub const OS_RELEASE_UBUNTU_26_04: &str = r#"PRETTY_NAME="Ubuntu 26.04 LTS"
NAME="Ubuntu"
VERSION_ID="26.04"
VERSION="26.04 LTS (Resolute Raccoon)"
VERSION_CODENAME=resolute
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=resolute
LOGO=ubuntu-logo
"#;
const LSB_RELEASE_UBUNTU_26_04: &str = r#"DISTRIB_ID=Ubuntu
DISTRIB_RELEASE=26.04
DISTRIB_CODENAME=resolute
DISTRIB_DESCRIPTION="Ubuntu 26.04 LTS"
"#;

/// `/etc/os-release` of Debian 12, for tests of the OS check.
pub const OS_RELEASE_DEBIAN_12: &str = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"#;

/// `/etc/os-release` of Ubuntu 24.04 LTS (a supported-looking but wrong version).
pub const OS_RELEASE_UBUNTU_24_04: &str = r#"PRETTY_NAME="Ubuntu 24.04.2 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.2 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=noble
LOGO=ubuntu-logo
"#;

/// How to build a lab server. `LabOptions::default()` is the homelab's expected server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct LabOptions {
    /// `homelab ALL=(ALL:ALL) NOPASSWD:ALL` (default true); false: sudo asks for
    /// [`LAB_PASSWORD`], so `sudo -n` fails with "a password is required".
    pub sudo_nopasswd: bool,
    /// Full contents of `/etc/os-release` (and `/usr/lib/os-release`); `None` = Ubuntu 26.04
    /// ([`OS_RELEASE_UBUNTU_26_04`]). See also [`OS_RELEASE_DEBIAN_12`].
    pub os_release: Option<String>,
    /// More `authorized_keys` lines for `homelab` (e.g. an rsa or ecdsa public key).
    pub extra_authorized_keys: Vec<String>,
    /// Hostname of the server (letters, digits, '-'); default: the netns name `rebox-lab-N`.
    pub name_hint: Option<String>,
    /// Parent directory of the scratch dir; default: the registry dir `/run/rebox-lab/<netns>`
    /// is the scratch dir.
    pub scratch_parent: Option<PathBuf>,
    /// Size of the server's root file system as `df /` inside reports it (the tmpfs holding
    /// the overlay's upper dir; `tmpfs size=`, e.g. "2G"); default [`DEFAULT_DISK_SIZE`].
    /// Writes use host RAM, whatever the size says.
    pub disk_size: Option<String>,
}

/// Default size of a lab server's root file system (see [`LabOptions::disk_size`]).
pub const DEFAULT_DISK_SIZE: &str = "64G";

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            sudo_nopasswd: true,
            os_release: None,
            extra_authorized_keys: Vec::new(),
            name_hint: None,
            scratch_parent: None,
            disk_size: None,
        }
    }
}

/// Everything known about a running lab; `state.json` in its registry dir, and the JSON that
/// `rebox-lab server up` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabInfo {
    /// Hostname of the server.
    pub name: String,
    /// Network namespace (`rebox-lab-N`); also the name of the registry dir.
    pub netns: String,
    /// N: the lab's /24 is 10.77.N.0/24.
    pub index: u8,
    /// The server's address (10.77.N.2).
    pub addr: Ipv4Addr,
    /// The host's address on the lab's veth pair (10.77.N.1).
    pub host_addr: Ipv4Addr,
    /// Host end of the veth pair (`rlabN`).
    pub veth: String,
    pub ssh_port: u16,
    pub user: String,
    /// Private key (ed25519, mode 600) authorized for `user`.
    pub client_key: PathBuf,
    /// "SHA256:…" as `ssh-keygen -lf` prints it.
    pub host_key_fingerprint: String,
    /// "ssh-ed25519 AAAA…"
    pub host_public_key: String,
    /// "10.77.N.2 ssh-ed25519 AAAA…"
    pub known_hosts_line: String,
    /// A known_hosts file holding `known_hosts_line`.
    pub known_hosts_file: PathBuf,
    pub scratch_dir: PathBuf,
    /// The overlay's upper dir: the server's writes.
    pub upper_dir: PathBuf,
    /// Host PID of the lab's PID 1 (its holder) and that process's start time (clock ticks).
    pub holder_pid: u32,
    pub holder_start: u64,
    /// The process whose death makes the lab stale (`None`: a persistent lab, see
    /// [`LabServer::detach`]).
    pub owner: Option<ProcId>,
    pub options: LabOptions,
}

/// A process identity that survives PID reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: u32,
    pub start: u64,
}

impl ProcId {
    fn me() -> ProcId {
        let pid = std::process::id();
        ProcId {
            pid,
            start: proc_start_time(pid).unwrap_or(0),
        }
    }
    fn alive(&self) -> bool {
        proc_start_time(self.pid) == Some(self.start)
    }
}

/// A running lab server. Dropping it (or [`LabServer::stop`]) removes everything.
#[derive(Debug)]
pub struct LabServer {
    info: LabInfo,
    /// The `unshare` process above the holder when this process started it (reaped on stop).
    holder_child: Option<Child>,
    /// Drop tears the lab down unless detached or already stopped.
    armed: bool,
}

impl LabServer {
    /// Start a lab server: allocate a name and /24, set up the network, the overlay and
    /// sshd, and wait until sshd answers. Calls [`cleanup_stale`] first.
    pub fn start(opts: LabOptions) -> Result<LabServer> {
        let _ = cleanup_stale();
        if let Some(h) = &opts.name_hint {
            validate_hostname(h)?;
        }
        let (index, netns) = allocate()?;
        let registry = registry_dir(&netns);
        let scratch = match &opts.scratch_parent {
            Some(p) => p.join(&netns),
            None => registry.clone(),
        };
        let name = opts.name_hint.clone().unwrap_or_else(|| netns.clone());
        let info = LabInfo {
            name,
            netns: netns.clone(),
            index,
            addr: Ipv4Addr::new(10, 77, index, 2),
            host_addr: Ipv4Addr::new(10, 77, index, 1),
            veth: format!("rlab{index}"),
            ssh_port: 22,
            user: LAB_USER.to_string(),
            client_key: scratch.join("id_ed25519"),
            host_key_fingerprint: String::new(),
            host_public_key: String::new(),
            known_hosts_line: String::new(),
            known_hosts_file: scratch.join("known_hosts"),
            upper_dir: scratch.join("fs/upper"),
            scratch_dir: scratch,
            holder_pid: 0,
            holder_start: 0,
            owner: Some(ProcId::me()),
            options: opts,
        };
        // From here on, Drop cleans up whatever was created.
        let mut lab = LabServer {
            info,
            holder_child: None,
            armed: true,
        };
        lab.save()?;
        lab.setup_network()
            .with_context(|| format!("setting up the network of lab {netns}"))?;
        fs::create_dir_all(&lab.info.scratch_dir)?;
        keygen(&lab.info.client_key, &format!("{LAB_USER}@rebox-lab"))?;
        lab.boot()
            .with_context(|| format!("starting lab server {netns}"))?;
        Ok(lab)
    }

    /// Attach to a running lab by hostname or netns name (e.g. from another process). Dropping
    /// the result does NOT stop the lab; call [`LabServer::stop`] for that.
    pub fn attach(name: &str) -> Result<LabServer> {
        let mut found = Vec::new();
        for info in list()? {
            if info.netns == name || info.name == name {
                found.push(info);
            }
        }
        match found.len() {
            0 => bail!("no lab server named {name} (see `rebox-lab server list`)"),
            1 => Ok(LabServer {
                info: found.remove(0),
                holder_child: None,
                armed: false,
            }),
            _ => bail!("several lab servers are named {name}; use the netns name"),
        }
    }

    /// Keep the lab running after this value is dropped and this process exits (it becomes
    /// persistent: only `stop`, `rebox-lab server down` or a dead holder ends it).
    pub fn detach(mut self) -> Result<LabInfo> {
        self.info.owner = None;
        self.save()?;
        self.armed = false;
        // The unshare process is re-parented to init when we exit.
        self.holder_child.take();
        Ok(self.info.clone())
    }

    pub fn info(&self) -> &LabInfo {
        &self.info
    }
    pub fn name(&self) -> &str {
        &self.info.name
    }
    pub fn netns(&self) -> &str {
        &self.info.netns
    }
    pub fn addr(&self) -> Ipv4Addr {
        self.info.addr
    }
    pub fn host_addr(&self) -> Ipv4Addr {
        self.info.host_addr
    }
    pub fn ssh_port(&self) -> u16 {
        self.info.ssh_port
    }
    pub fn user(&self) -> &str {
        &self.info.user
    }
    /// Private key (ed25519, mode 600) authorized for `homelab`; the same across rebuilds.
    pub fn client_key(&self) -> &Path {
        &self.info.client_key
    }
    /// "SHA256:…" exactly as `ssh-keygen -lf` prints it.
    pub fn host_key_fingerprint(&self) -> String {
        self.info.host_key_fingerprint.clone()
    }
    /// "ssh-ed25519 AAAA…"
    pub fn host_public_key_line(&self) -> String {
        self.info.host_public_key.clone()
    }
    /// "10.77.N.2 ssh-ed25519 AAAA…"
    pub fn known_hosts_line(&self) -> String {
        self.info.known_hosts_line.clone()
    }
    /// A file (in the scratch dir) holding [`LabServer::known_hosts_line`].
    pub fn known_hosts_file(&self) -> &Path {
        &self.info.known_hosts_file
    }
    pub fn scratch_dir(&self) -> &Path {
        &self.info.scratch_dir
    }
    /// The overlay's upper dir (every file the server wrote or changed).
    pub fn upper_dir(&self) -> &Path {
        &self.info.upper_dir
    }

    /// Where a file the server wrote lives in the overlay's upper dir, e.g.
    /// `lab.path("/usr/local/bin/k3s")`. Files the server never touched are not there (they
    /// are the host's); see [`LabServer::merged_path`] for the server's full view. A deleted
    /// file shows up as a whiteout (a 0/0 character device).
    pub fn path(&self, inside: &str) -> PathBuf {
        self.info.upper_dir.join(inside.trim_start_matches('/'))
    }

    /// The server's full view of a path (through `/proc/<holder>/root`), readable from the
    /// host while the lab runs.
    pub fn merged_path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.info.holder_pid))
            .join(inside.trim_start_matches('/'))
    }

    /// A command that runs `bash -c shell` as root inside the server (its namespaces and root
    /// file system; a clean environment with PATH, HOME=/root, LANG=C.UTF-8). Configure stdio
    /// and run it yourself. Background processes it starts (`cmd &`, daemons) keep running
    /// until the lab stops.
    pub fn command_as_root(&self, shell: &str) -> Command {
        self.root_command(shell, &[])
    }

    fn root_command(&self, shell: &str, env: &[(&str, String)]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.info.holder_pid.to_string())
            .args(["-m", "-u", "-n", "-p", "-r", "-w", "--"])
            // nsenter forks to enter the PID namespace; if it dies (killed child, timeout),
            // the command dies too (processes it forks, like daemons, do not).
            .args(["setpriv", "--pdeathsig", "KILL", "--"])
            .args([
                "env",
                "-i",
                PATH_ENV,
                "HOME=/root",
                "USER=root",
                "LOGNAME=root",
            ])
            .arg("LANG=C.UTF-8")
            .args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .args(["/bin/bash", "-c", shell]);
        cmd
    }

    /// Run `bash -c shell` as root inside the server and collect its output (stdin: null).
    /// An `Err` only when it could not run; check `status` yourself, or use
    /// [`LabServer::run_as_root_ok`].
    pub fn run_as_root(&self, shell: &str) -> Result<Output> {
        self.check_running()?;
        self.command_as_root(shell)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running nsenter for {shell:?}"))
    }

    /// Like [`LabServer::run_as_root`], but a non-zero exit is an error (with its stderr);
    /// returns stdout.
    pub fn run_as_root_ok(&self, shell: &str) -> Result<String> {
        let out = self.run_as_root(shell)?;
        if !out.status.success() {
            bail!(
                "in lab {}: `{shell}` failed ({}): {}",
                self.info.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Start `bash -c shell` as root inside the server in the background (stdio: null; use
    /// [`LabServer::command_as_root`] for other stdio), e.g. a listener for tunnel tests.
    /// Killing the returned child (`nsenter` on the host) kills the command inside (not what
    /// it forked); everything dies when the lab stops.
    pub fn spawn_as_root(&self, shell: &str) -> Result<Child> {
        self.check_running()?;
        self.command_as_root(shell)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning nsenter for {shell:?}"))
    }

    /// A system `ssh` command as `homelab` to this server, with its client key and a
    /// known_hosts file holding only its host key (strict checking, batch mode), running
    /// `remote` (a shell command line).
    pub fn ssh(&self, remote: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(&self.info.client_key)
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.info.known_hosts_file.display()
            ))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=10",
                "-F",
                "/dev/null",
                "-p",
            ])
            .arg(self.info.ssh_port.to_string())
            .arg(format!("{}@{}", self.info.user, self.info.addr))
            .arg(remote);
        cmd
    }

    /// Stop sshd (the listener; like `systemctl stop ssh`, open sessions survive) and wait
    /// until port 22 refuses connections.
    pub fn stop_sshd(&self) -> Result<()> {
        self.run_as_root_ok(
            "pid=$(cat /run/sshd.pid 2>/dev/null) || exit 0; kill \"$pid\" 2>/dev/null || true",
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.sshd_answers() {
            if Instant::now() > deadline {
                bail!("sshd of lab {} still answers after stop", self.info.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// (Re)start sshd and wait until it answers with an SSH banner.
    pub fn start_sshd(&self) -> Result<()> {
        self.run_as_root_ok("/usr/sbin/sshd -E /var/log/sshd.log")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.sshd_answers() {
            if Instant::now() > deadline {
                let log = self
                    .run_as_root_ok("tail -n 20 /var/log/sshd.log")
                    .unwrap_or_default();
                bail!("sshd of lab {} does not answer: {log}", self.info.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Rebuild the server, like a node reinstalled from scratch: everything inside is thrown
    /// away (fresh overlay), same name and address, a NEW host key, the same client key
    /// authorized.
    pub fn rebuild(&mut self) -> Result<()> {
        self.kill_processes()?;
        let fs_dir = self.info.scratch_dir.join("fs");
        umount(&fs_dir)?;
        self.boot()
            .with_context(|| format!("rebuilding lab server {}", self.info.netns))
    }

    /// Stop the lab and remove everything it created. Also done on Drop (errors printed).
    pub fn stop(mut self) -> Result<()> {
        self.armed = false;
        self.teardown()
    }

    // ---- internals ----

    fn check_running(&self) -> Result<()> {
        let holder = ProcId {
            pid: self.info.holder_pid,
            start: self.info.holder_start,
        };
        if self.info.holder_pid == 0 || !holder.alive() {
            bail!("lab server {} is not running", self.info.netns);
        }
        Ok(())
    }

    fn sshd_answers(&self) -> bool {
        let sa = SocketAddr::from((self.info.addr, self.info.ssh_port));
        let Ok(mut s) = TcpStream::connect_timeout(&sa, Duration::from_millis(500)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 8];
        let mut got = 0;
        while got < 4 {
            match std::io::Read::read(&mut s, &mut buf[got..]) {
                Ok(0) | Err(_) => return false,
                Ok(n) => got += n,
            }
        }
        let _ = s.write_all(b"SSH-2.0-rebox-lab-probe\r\n");
        buf.starts_with(b"SSH-")
    }

    fn save(&self) -> Result<()> {
        let dir = registry_dir(&self.info.netns);
        fs::create_dir_all(&dir)?;
        let tmp = dir.join("state.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(&self.info)?)?;
        fs::rename(&tmp, dir.join("state.json"))?;
        Ok(())
    }

    fn setup_network(&self) -> Result<()> {
        let (ns, veth) = (&self.info.netns, &self.info.veth);
        let host = format!("{}/24", self.info.host_addr);
        let lab = format!("{}/24", self.info.addr);
        run(
            "ip",
            &[
                "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        )?;
        run("ip", &["addr", "add", &host, "dev", veth])?;
        run("ip", &["link", "set", veth, "up"])?;
        run("ip", &["-n", ns, "addr", "add", &lab, "dev", "eth0"])?;
        run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Fresh tmpfs for the overlay, new host key, holder, setup, sshd.
    fn boot(&mut self) -> Result<()> {
        let scratch = self.info.scratch_dir.clone();
        let fs_dir = scratch.join("fs");
        fs::create_dir_all(&fs_dir)?;
        let size = self
            .info
            .options
            .disk_size
            .as_deref()
            .unwrap_or(DEFAULT_DISK_SIZE);
        if size.is_empty() || !size.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'%') {
            bail!("invalid disk size {size:?} (e.g. 64G)");
        }
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("mode=755,size={size}"),
                "rebox-lab",
                path_str(&fs_dir)?,
            ],
        )?;
        fs::create_dir(fs_dir.join("upper"))?;
        fs::create_dir(fs_dir.join("work"))?;

        // A new host key for every boot.
        let host_key = scratch.join("ssh_host_ed25519_key");
        keygen(&host_key, "")?;
        let host_pub = fs::read_to_string(host_key.with_extension("pub"))?;
        let host_pub = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let fp = capture(
            "ssh-keygen",
            &["-l", "-f", path_str(&host_key.with_extension("pub"))?],
        )?;
        self.info.host_key_fingerprint = fp
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow!("unexpected ssh-keygen -l output: {fp}"))?
            .to_string();
        self.info.known_hosts_line = format!("{} {}", self.info.addr, host_pub);
        self.info.host_public_key = host_pub.clone();
        fs::write(
            &self.info.known_hosts_file,
            format!("{}\n", self.info.known_hosts_line),
        )?;

        self.start_holder()?;
        self.save()?;

        let opts = &self.info.options;
        let mut authorized = vec![
            fs::read_to_string(self.info.client_key.with_extension("pub"))?
                .trim()
                .to_string(),
        ];
        authorized.extend(
            opts.extra_authorized_keys
                .iter()
                .map(|k| k.trim().to_string()),
        );
        let (os_release, lsb) = match &opts.os_release {
            Some(s) => (s.clone(), String::new()),
            None => (
                OS_RELEASE_UBUNTU_26_04.to_string(),
                LSB_RELEASE_UBUNTU_26_04.to_string(),
            ),
        };
        let env = [
            ("LAB_USER", LAB_USER.to_string()),
            ("LAB_PASSWORD", LAB_PASSWORD.to_string()),
            ("LAB_HOSTNAME", self.info.name.clone()),
            ("LAB_ADDR", self.info.addr.to_string()),
            ("LAB_OS_RELEASE", os_release),
            ("LAB_LSB_RELEASE", lsb),
            ("LAB_AUTHORIZED_KEYS", authorized.join("\n")),
            (
                "LAB_SUDO_NOPASSWD",
                if opts.sudo_nopasswd { "1" } else { "0" }.into(),
            ),
            (
                "LAB_HOST_KEY",
                fs::read_to_string(&host_key)?.trim().to_string(),
            ),
            ("LAB_HOST_KEY_PUB", host_pub),
            ("LAB_SYSTEMCTL", SYSTEMCTL_SH.to_string()),
            ("LAB_TIMEDATECTL", TIMEDATECTL_SH.to_string()),
            ("LAB_APT_MIRROR", APT_MIRROR_SH.to_string()),
            // The lab's Vault is bao at its installed path (the host's, seen through the
            // overlay); a LAB_BAO of the caller is passed on to lab-k3s.
            (
                crate::bao::BAO_ENV,
                std::env::var(crate::bao::BAO_ENV).unwrap_or_default(),
            ),
        ];
        let out = self
            .root_command(SETUP_SH, &env)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "setting up the server failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        self.start_sshd()
    }

    fn start_holder(&mut self) -> Result<()> {
        let log = fs::File::create(self.info.scratch_dir.join("holder.log"))?;
        // bash keeps the script open and reads on after pivot_root, when the path is gone.
        let script = self.info.scratch_dir.join("holder.sh");
        fs::write(&script, HOLDER_SH)?;
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.info.netns))
            .args(["unshare", "--mount", "--uts", "--pid", "--fork"])
            .args(["--propagation", "private", "--", "/bin/bash"])
            .arg(&script)
            .arg(&self.info.name)
            .arg(&self.info.scratch_dir)
            .env_clear()
            .env("PATH", &PATH_ENV[5..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            // Not in our process group: ^C in a terminal only reaches us (Drop cleans up).
            .process_group(0)
            .spawn()
            .context("spawning the lab holder (nsenter/unshare)")?;
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut pid = None;
        let mut ready = false;
        for line in lines.by_ref() {
            let line = line?;
            if let Some(p) = line.strip_prefix("pid ") {
                pid = Some(p.trim().parse::<u32>()?);
                self.info.holder_pid = pid.unwrap();
                self.info.holder_start = proc_start_time(pid.unwrap()).unwrap_or(0);
            } else if line == "ready" {
                ready = true;
                break;
            }
        }
        self.holder_child = Some(child);
        if !ready || pid.is_none() {
            let log =
                fs::read_to_string(self.info.scratch_dir.join("holder.log")).unwrap_or_default();
            bail!("the lab holder failed: {}", log.trim());
        }
        Ok(())
    }

    /// Kill every process of the lab (its PID 1, and so its PID namespace) and wait.
    fn kill_processes(&mut self) -> Result<()> {
        let holder = ProcId {
            pid: self.info.holder_pid,
            start: self.info.holder_start,
        };
        if holder.pid != 0 && holder.alive() {
            let _ = Command::new("kill")
                .args(["-KILL", &holder.pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut c) = self.holder_child.take() {
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while holder.pid != 0 && holder.alive() {
            if Instant::now() > deadline {
                bail!("lab holder {} does not die", holder.pid);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Anything else still in the netns (should be nothing).
        kill_netns_pids(&self.info.netns);
        self.info.holder_pid = 0;
        self.info.holder_start = 0;
        Ok(())
    }

    fn teardown(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        if let Err(e) = self.kill_processes() {
            errors.push(format!("{e:#}"));
        }
        if let Err(e) = remove_lab_leftovers(
            &self.info.netns,
            &self.info.veth,
            &[
                self.info.scratch_dir.clone(),
                registry_dir(&self.info.netns),
            ],
        ) {
            errors.push(format!("{e:#}"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("stopping lab {}: {}", self.info.netns, errors.join("; "))
        }
    }
}

impl Drop for LabServer {
    fn drop(&mut self) {
        if self.armed {
            self.armed = false;
            if let Err(e) = self.teardown() {
                eprintln!("rebox-lab: {e:#}");
            }
        }
    }
}

/// All labs with a state file (running or stale).
pub fn list() -> Result<Vec<LabInfo>> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(REGISTRY_DIR) else {
        return Ok(out);
    };
    for e in rd.flatten() {
        let p = e.path().join("state.json");
        if let Ok(bytes) = fs::read(&p) {
            if let Ok(info) = serde_json::from_slice::<LabInfo>(&bytes) {
                out.push(info);
            }
        }
    }
    out.sort_by_key(|i| i.index);
    Ok(out)
}

/// Remove leftovers of labs whose owning process is dead (crashed or killed test runs), or
/// persistent labs whose holder died, and `rebox-lab-*` network namespaces without a registry
/// dir. Never touches a lab whose owner is alive. Returns how many labs it removed.
pub fn cleanup_stale() -> Result<usize> {
    // Allocation takes the same lock: no lab is half-created while we look.
    let _lock = registry_lock()?;
    let mut removed = 0;
    let mut known = Vec::new();
    for e in fs::read_dir(REGISTRY_DIR)?.flatten() {
        let netns = e.file_name().to_string_lossy().into_owned();
        let Some(index) = netns
            .strip_prefix(NETNS_PREFIX)
            .and_then(|n| n.parse::<u8>().ok())
        else {
            continue;
        };
        known.push(netns.clone());
        let dir = e.path();
        let state: Option<LabInfo> = fs::read(dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let stale = match &state {
            Some(info) => match info.owner {
                Some(owner) => !owner.alive(),
                None => !(ProcId {
                    pid: info.holder_pid,
                    start: info.holder_start,
                })
                .alive(),
            },
            // Being created right now, or a crash before the first save.
            None => age(&dir) > Duration::from_secs(60),
        };
        if !stale {
            continue;
        }
        if let Some(info) = &state {
            let holder = ProcId {
                pid: info.holder_pid,
                start: info.holder_start,
            };
            if holder.pid != 0 && holder.alive() {
                let _ = Command::new("kill")
                    .args(["-KILL", &holder.pid.to_string()])
                    .status();
            }
        }
        kill_netns_pids(&netns);
        let mut dirs = vec![dir.clone()];
        if let Some(info) = &state {
            dirs.insert(0, info.scratch_dir.clone());
        }
        remove_lab_leftovers(&netns, &format!("rlab{index}"), &dirs)?;
        removed += 1;
    }
    // Network namespaces of ours without a registry dir (removed by hand, or a crash while
    // stopping): the dir is created before the netns and removed after it.
    if let Ok(list) = capture("ip", &["netns", "list"]) {
        for line in list.lines() {
            let Some(ns) = line.split_whitespace().next() else {
                continue;
            };
            let Some(index) = ns
                .strip_prefix(NETNS_PREFIX)
                .and_then(|n| n.parse::<u8>().ok())
            else {
                continue;
            };
            if known.iter().any(|k| k == ns) || registry_dir(ns).exists() {
                continue;
            }
            kill_netns_pids(ns);
            remove_lab_leftovers(ns, &format!("rlab{index}"), &[])?;
            removed += 1;
        }
    }
    Ok(removed)
}

// ---- helpers ----

fn registry_dir(netns: &str) -> PathBuf {
    Path::new(REGISTRY_DIR).join(netns)
}

/// Lock shared by allocation and [`cleanup_stale`] (released when the file is dropped).
fn registry_lock() -> Result<fs::File> {
    fs::create_dir_all(REGISTRY_DIR)
        .with_context(|| format!("creating {REGISTRY_DIR} (the lab needs root)"))?;
    let lock = fs::File::create(Path::new(REGISTRY_DIR).join(".lock"))?;
    lock.lock()?;
    Ok(lock)
}

/// Claim a free index N: create the registry dir, then `ip netns add rebox-lab-N`, under the
/// registry lock. Indices are handed out round-robin (`.next`), so a just-removed lab's name
/// and address are not reused at once (less confusing for tests running in parallel).
fn allocate() -> Result<(u8, String)> {
    let _lock = registry_lock()?;
    let next_file = Path::new(REGISTRY_DIR).join(".next");
    let next: u32 = fs::read_to_string(&next_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|n| (1..=254).contains(n))
        .unwrap_or(1);
    for k in 0..254u32 {
        let index = ((next - 1 + k) % 254 + 1) as u8;
        let netns = format!("{NETNS_PREFIX}{index}");
        let dir = registry_dir(&netns);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
        let ok = Command::new("ip")
            .args(["netns", "add", &netns])
            .stderr(Stdio::null())
            .status()
            .context("running ip (install iproute2)")?
            .success();
        if ok {
            fs::write(&next_file, format!("{}\n", index as u32 % 254 + 1))?;
            return Ok((index, netns));
        }
        let _ = fs::remove_dir(&dir);
    }
    bail!("no free lab index (254 labs running? try `rebox-lab cleanup`)")
}

fn remove_lab_leftovers(netns: &str, veth: &str, dirs: &[PathBuf]) -> Result<()> {
    let mut errors = Vec::new();
    // Mounts on the host under the lab's dirs (the tmpfs of the overlay's upper dir).
    for dir in dirs {
        for m in mounts_under(dir).into_iter().rev() {
            if let Err(e) = umount(&m) {
                errors.push(format!("{e:#}"));
            }
        }
    }
    let _ = Command::new("ip")
        .args(["link", "del", veth])
        .stderr(Stdio::null())
        .status();
    if Path::new("/run/netns").join(netns).exists() {
        if let Err(e) = run("ip", &["netns", "del", netns]) {
            errors.push(format!("{e:#}"));
        }
    }
    for dir in dirs {
        if !mounts_under(dir).is_empty() {
            errors.push(format!("{} still has mounts; not removed", dir.display()));
            continue;
        }
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("removing {}: {e}", dir.display())),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("; "))
    }
}

/// Mount points at or below `dir` in the host's mount table (decoded `\040` escapes).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(dir))
        .collect()
}

fn unescape_mount(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

fn umount(path: &Path) -> Result<()> {
    let p = path_str(path)?;
    for _ in 0..50 {
        let st = Command::new("umount")
            .arg(p)
            .stderr(Stdio::null())
            .status()?;
        if st.success() || mounts_under(path).iter().all(|m| m != path) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    run("umount", &["-l", p])
}

fn kill_netns_pids(netns: &str) {
    if !Path::new("/run/netns").join(netns).exists() {
        return;
    }
    for _ in 0..50 {
        let pids = capture("ip", &["netns", "pids", netns]).unwrap_or_default();
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if pids.is_empty() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn keygen(path: &Path, comment: &str) -> Result<()> {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("pub"));
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            comment,
            "-f",
            path_str(path)?,
        ],
    )?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn validate_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 63
        && h.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        && !h.starts_with('-');
    if !ok {
        bail!("invalid lab hostname {h:?} (letters, digits and '-', at most 63)");
    }
    Ok(())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", p.display()))
}

fn run(prog: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        bail!(
            "`{prog} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn capture(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        bail!(
            "`{prog} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Start time (clock ticks since boot, field 22 of /proc/PID/stat); None if no such process
/// or a zombie.
fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state).
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(22 - 3)?.parse().ok()
}

fn age(p: &Path) -> Duration {
    fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}
