//! Preflight: read-only checks that a rebuild can start on this server. Each check yields a
//! verdict with evidence and, when it fails, what to do about it. Nothing here changes the
//! server.

use serde::Serialize;

use crate::config::{Config, Nas, Requirements};
use crate::remote::{Remote, RemoteError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    /// Not checked because an earlier check failed.
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    fn push(
        &mut self,
        id: &'static str,
        title: &'static str,
        status: Status,
        detail: impl Into<String>,
        remedy: Option<String>,
    ) {
        self.checks.push(Check {
            id,
            title,
            status,
            detail: detail.into(),
            remedy,
        });
    }
    fn pass(&mut self, id: &'static str, title: &'static str, detail: impl Into<String>) {
        self.push(id, title, Status::Pass, detail, None);
    }
    fn fail(
        &mut self,
        id: &'static str,
        title: &'static str,
        detail: impl Into<String>,
        remedy: impl Into<String>,
    ) {
        self.push(id, title, Status::Fail, detail, Some(remedy.into()));
    }
    fn warn(
        &mut self,
        id: &'static str,
        title: &'static str,
        detail: impl Into<String>,
        remedy: impl Into<String>,
    ) {
        self.push(id, title, Status::Warn, detail, Some(remedy.into()));
    }
    fn finish(mut self) -> Report {
        self.ok = !self.checks.iter().any(|c| c.status == Status::Fail);
        self
    }
}

/// The three connection checks, from the error `Remote::connect` gave (or its success).
pub fn connection_checks(result: &anyhow::Result<Remote>, addr: &str) -> Report {
    let mut r = Report::default();
    const REACH: &str = "SSH reachable";
    const KEY: &str = "host key";
    const AUTH: &str = "authentication";
    match result {
        Ok(remote) => {
            r.pass("ssh", REACH, remote.target.addr());
            let note = match &remote.host_key_note {
                crate::remote::HostKeyNote::Known => "matches known_hosts".to_string(),
                crate::remote::HostKeyNote::Recorded => "new, recorded in known_hosts".to_string(),
                crate::remote::HostKeyNote::Replaced { old_entries } => {
                    format!(
                        "replaced {old_entries} old known_hosts entr{}",
                        if *old_entries == 1 { "y" } else { "ies" }
                    )
                }
            };
            r.pass(
                "host_key",
                KEY,
                format!("{} ({note})", remote.host_key_fingerprint),
            );
            r.pass(
                "auth",
                AUTH,
                format!("user {} with {}", remote.target.user, remote.auth_method),
            );
        }
        Err(err) => {
            let (first, second): (Status, Status) = match err.downcast_ref::<RemoteError>() {
                Some(RemoteError::Unreachable { .. }) | Some(RemoteError::Timeout { .. }) => {
                    (Status::Fail, Status::Skip)
                }
                Some(RemoteError::HostKeyUnknown { .. })
                | Some(RemoteError::HostKeyChanged { .. })
                | Some(RemoteError::ReplaceMismatch { .. })
                | Some(RemoteError::HostKeyRevoked { .. }) => (Status::Pass, Status::Fail),
                _ => (Status::Pass, Status::Pass),
            };
            let (summary, remedy) = split_remedy(err);
            let mut slot = |id, title, status: Status| match status {
                Status::Fail => r.push(
                    id,
                    title,
                    Status::Fail,
                    summary.clone(),
                    Some(remedy.clone()),
                ),
                Status::Skip => r.push(id, title, Status::Skip, "not checked: no connection", None),
                _ if id == "ssh" => r.pass(id, title, addr),
                _ => r.pass(id, title, "accepted"),
            };
            slot("ssh", REACH, first);
            if first == Status::Fail {
                slot("host_key", KEY, Status::Skip);
                slot("auth", AUTH, Status::Skip);
            } else if second == Status::Fail {
                slot("host_key", KEY, Status::Fail);
                slot("auth", AUTH, Status::Skip);
            } else {
                slot("host_key", KEY, Status::Pass);
                slot("auth", AUTH, Status::Fail);
            }
        }
    }
    r
}

/// What went wrong, one line, and the error's next step (see `crate::next`) as the remedy.
fn split_remedy(err: &anyhow::Error) -> (String, String) {
    let what: Vec<String> = err
        .chain()
        .map(|c| {
            crate::next::split(&c.to_string())
                .0
                .trim()
                .replace('\n', " ")
        })
        .collect();
    let next = crate::next::of(err).unwrap_or_else(|| "see the error above".to_string());
    (what.join(": "), next.replace('\n', " "))
}

/// Names of server checks, listed as skipped when there is no connection.
const SERVER_CHECKS: &[(&str, &str)] = &[
    ("sudo", "passwordless sudo"),
    ("os", "operating system"),
    ("arch", "architecture"),
    ("cpu", "CPUs"),
    ("memory", "memory"),
    ("disk", "free disk on /var/lib"),
    ("packages", "Longhorn packages"),
    ("iscsid", "iscsid running"),
    ("multipath", "multipathd leaves Longhorn's devices alone"),
    ("time_sync", "time synchronised"),
    ("ports", "ports 6443 and 10250 free"),
    ("k3s", "no existing k3s"),
    ("nas", "NAS reachable from the server"),
];

/// Runs every check; `connection` is the outcome of connecting.
pub async fn run(
    config: &Config,
    addr: &str,
    connection: anyhow::Result<Remote>,
    allow_os: bool,
) -> Report {
    let mut report = connection_checks(&connection, addr);
    let Ok(remote) = connection else {
        for (id, title) in SERVER_CHECKS {
            report.push(id, title, Status::Skip, "not checked: no connection", None);
        }
        return report.finish();
    };
    if let Err(e) = server_checks(&remote, config, allow_os, &mut report).await {
        report.fail(
            "internal",
            "checks completed",
            format!("{e:#}"),
            "rerun with -vv and report the log",
        );
    }
    remote.close().await;
    report.finish()
}

async fn server_checks(
    remote: &Remote,
    config: &Config,
    allow_os: bool,
    r: &mut Report,
) -> anyhow::Result<()> {
    let req = &config.requirements;
    match remote.sudo("true").await {
        Ok(out) if out.success() => r.pass(
            "sudo",
            "passwordless sudo",
            format!("sudo -n works for {}", remote.target.user),
        ),
        Ok(out) => r.fail(
            "sudo",
            "passwordless sudo",
            out.stderr_str().trim().to_string(),
            "check sudo on the server",
        ),
        Err(e) => {
            let (what, next) = split_remedy(&e);
            r.fail("sudo", "passwordless sudo", what, next);
        }
    }

    let os = remote.exec("cat /etc/os-release").await?.stdout_str();
    check_os(&os, req, allow_os, r);

    let arch = remote
        .exec("uname -m")
        .await?
        .stdout_str()
        .trim()
        .to_string();
    if req.architectures.iter().any(|a| a == &arch) {
        r.pass("arch", "architecture", arch);
    } else {
        r.fail(
            "arch",
            "architecture",
            format!("{arch} (supported: {})", req.architectures.join(", ")),
            "use a server with a supported CPU architecture",
        );
    }

    let cpus: u32 = remote
        .exec("nproc")
        .await?
        .stdout_str()
        .trim()
        .parse()
        .unwrap_or(0);
    if cpus >= req.min_cpus {
        r.pass("cpu", "CPUs", format!("{cpus} (need {})", req.min_cpus));
    } else {
        r.fail(
            "cpu",
            "CPUs",
            format!("{cpus}, need at least {}", req.min_cpus),
            "use a bigger server or lower requirements.min_cpus",
        );
    }

    let meminfo = remote.exec("cat /proc/meminfo").await?.stdout_str();
    let mem_mib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024;
    if mem_mib >= req.min_memory_mib {
        r.pass(
            "memory",
            "memory",
            format!("{mem_mib} MiB (need {})", req.min_memory_mib),
        );
    } else {
        r.fail(
            "memory",
            "memory",
            format!("{mem_mib} MiB, need at least {} MiB", req.min_memory_mib),
            "add memory or lower requirements.min_memory_mib",
        );
    }

    let df = remote
        .exec("df -Pk /var/lib | tail -n 1")
        .await?
        .stdout_str();
    let avail_gib = df
        .split_whitespace()
        .nth(3)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / (1024 * 1024);
    if avail_gib >= req.min_disk_gib {
        r.pass(
            "disk",
            "free disk on /var/lib",
            format!("{avail_gib} GiB free (need {})", req.min_disk_gib),
        );
    } else {
        r.fail(
            "disk",
            "free disk on /var/lib",
            format!("{avail_gib} GiB free, need {} GiB", req.min_disk_gib),
            "free space or grow the disk holding /var/lib",
        );
    }

    let pkgs = remote
        .exec("dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' open-iscsi nfs-common 2>/dev/null")
        .await?
        .stdout_str();
    let missing: Vec<&str> = ["open-iscsi", "nfs-common"]
        .into_iter()
        .filter(|p| !pkgs.lines().any(|l| l.starts_with(&format!("{p} ii"))))
        .collect();
    if missing.is_empty() {
        r.pass(
            "packages",
            "Longhorn packages",
            "open-iscsi, nfs-common installed",
        );
    } else {
        r.warn(
            "packages",
            "Longhorn packages",
            format!("missing: {}", missing.join(", ")),
            format!(
                "the rebuild installs them; offline, install them first: sudo apt install {}",
                missing.join(" ")
            ),
        );
    }

    let iscsid = remote.exec("systemctl is-active iscsid 2>&1").await?;
    match iscsid.stdout_str().trim() {
        "active" => r.pass("iscsid", "iscsid running", "active"),
        state => r.warn(
            "iscsid",
            "iscsid running",
            format!("not active ({})", first_line(state)),
            "the rebuild enables it; or: sudo systemctl enable --now iscsid",
        ),
    }

    // Ubuntu's multipathd claims the block devices Longhorn attaches over iSCSI, and the
    // volumes then fail to mount (Longhorn KB "troubleshooting-volume-with-multipath").
    let multipath = remote
        .exec("systemctl is-active multipathd 2>/dev/null; cat /etc/multipath.conf 2>/dev/null")
        .await?;
    let text = multipath.stdout_str();
    let (state, conf) = text.split_once('\n').unwrap_or((text.trim(), ""));
    check_multipath(state.trim(), conf, r);

    let ntp = remote
        .exec("timedatectl show -p NTPSynchronized --value 2>&1")
        .await?;
    match (ntp.success(), ntp.stdout_str().trim()) {
        (true, "yes") => r.pass("time_sync", "time synchronised", "NTP synchronised"),
        (true, v) => r.warn(
            "time_sync",
            "time synchronised",
            format!("NTPSynchronized={v}"),
            "enable time sync: sudo timedatectl set-ntp true (TLS and backups need a right clock)",
        ),
        (false, v) => r.warn(
            "time_sync",
            "time synchronised",
            format!("cannot tell ({})", first_line(v)),
            "check the clock: timedatectl status",
        ),
    }

    let listening = remote.exec("ss -Hltn 2>/dev/null").await?.stdout_str();
    let busy: Vec<u16> = [6443u16, 10250]
        .into_iter()
        .filter(|p| port_listening(&listening, *p))
        .collect();
    if busy.is_empty() {
        r.pass(
            "ports",
            "ports 6443 and 10250 free",
            "nothing listens on them",
        );
    } else {
        let list = busy
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        r.fail(
            "ports",
            "ports 6443 and 10250 free",
            format!("in use: {list}"),
            format!(
                "find the process: sudo ss -ltnp 'sport = :{}'; stop it",
                busy[0]
            ),
        );
    }

    let k3s = remote
        .exec("for p in /usr/local/bin/k3s /etc/rancher/k3s/config.yaml /etc/rancher/k3s/k3s.yaml /var/lib/rancher/k3s /etc/systemd/system/k3s.service; do [ -e \"$p\" ] && echo \"$p\"; done; true")
        .await?
        .stdout_str();
    let found: Vec<&str> = k3s.lines().filter(|l| !l.is_empty()).collect();
    if found.is_empty() {
        r.pass("k3s", "no existing k3s", "none found");
    } else {
        r.fail("k3s", "no existing k3s", format!("found {}", found.join(", ")), "a rebuild refuses to clobber an existing k3s: rebuild onto a freshly installed server, or remove k3s first (/usr/local/bin/k3s-uninstall.sh)");
    }

    nas_check(remote, &config.nas, r).await?;
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// multipathd inactive, or told to leave `sd*` devices alone: pass; else a warning.
fn check_multipath(state: &str, conf: &str, r: &mut Report) {
    const ID: &str = "multipath";
    const TITLE: &str = "multipathd leaves Longhorn's devices alone";
    let blacklisted = conf.contains("blacklist")
        && conf.lines().any(|l| {
            let l = l.trim();
            l.starts_with("devnode") && l.contains("^sd")
        });
    match (state, blacklisted) {
        ("active", false) => r.warn(
            ID,
            TITLE,
            "multipathd is active and does not blacklist sd* devices",
            "add `blacklist { devnode \"^sd[a-z0-9]+\" }` to /etc/multipath.conf, then `sudo systemctl restart multipathd` (or disable multipathd if no multipath storage is used); Longhorn KB: troubleshooting-volume-with-multipath",
        ),
        ("active", true) => r.pass(ID, TITLE, "active, sd* devices blacklisted"),
        (s, _) => r.pass(ID, TITLE, format!("not active ({})", first_line(s))),
    }
}

fn check_os(os_release: &str, req: &Requirements, allow_os: bool, r: &mut Report) {
    let field = |k: &str| {
        os_release
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let (id, version, pretty) = (field("ID"), field("VERSION_ID"), field("PRETTY_NAME"));
    let wanted = format!("{} {}", req.os_id, req.os_version);
    if id == req.os_id && version == req.os_version {
        r.pass("os", "operating system", pretty);
    } else if allow_os {
        r.warn(
            "os",
            "operating system",
            format!("{pretty} ({id} {version}); expected {wanted}"),
            "allowed by --allow-os; untested combinations may fail",
        );
    } else {
        r.fail(
            "os",
            "operating system",
            format!("{pretty} ({id} {version}); expected {wanted}"),
            format!("install {wanted} on the server, or pass --allow-os to try anyway"),
        );
    }
}

/// Whether `ss -Hltn` output shows a listener on `port`.
fn port_listening(ss: &str, port: u16) -> bool {
    ss.lines().any(|l| {
        l.split_whitespace()
            .nth(3)
            .and_then(|local| local.rsplit(':').next())
            .map(|p| p == port.to_string())
            .unwrap_or(false)
    })
}

/// The NAS host and TCP port the backup target needs, from its URL.
pub fn nas_endpoint(target: &str) -> Option<(String, u16)> {
    let (scheme, rest) = target.split_once("://")?;
    let port = match scheme {
        "nfs" => 2049,
        "cifs" | "smb" => 445,
        _ => return None,
    };
    let host = rest.split([':', '/']).next()?.to_string();
    valid_host(&host).then_some((host, port))
}

/// A DNS name or IPv4 address: letters, digits, '.', '-' only. Anything else (a shell
/// metacharacter from a tampered rebox.toml) is refused before it reaches the server.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// The server-side TCP probe of the NAS: host and port are arguments of the inner shell,
/// never part of its script.
fn nas_probe(host: &str, port: u16) -> String {
    format!(
        "timeout 5 bash -c 'exec 3<>\"/dev/tcp/$1/$2\"' rebox-probe {} {port} 2>&1",
        crate::remote::shell_quote(host)
    )
}

async fn nas_check(remote: &Remote, nas: &Nas, r: &mut Report) -> anyhow::Result<()> {
    const TITLE: &str = "NAS reachable from the server";
    let Some((host, port)) = nas_endpoint(&nas.backup_target) else {
        r.warn(
            "nas",
            TITLE,
            format!("cannot test {} from the server", nas.backup_target),
            "check the backup target by hand (rebox tests nfs:// and cifs:// targets whose host is a DNS name or IPv4 address)",
        );
        return Ok(());
    };
    let out = remote.exec(&nas_probe(&host, port)).await?;
    if out.success() {
        r.pass("nas", TITLE, format!("{host}:{port} answers"));
    } else {
        r.fail(
            "nas",
            TITLE,
            format!(
                "{host}:{port} does not answer from the server ({})",
                first_line(&out.stdout_str())
            ),
            format!(
                "check the NAS is on and exports to this server; nas.backup_target is {}",
                nas.backup_target
            ),
        );
    }
    Ok(())
}

/// The human form: one line per check, remedies under failures and warnings.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.checks {
        let mark = match c.status {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        out.push_str(&format!("[{mark}] {:<30} {}\n", c.title, c.detail));
        if let Some(remedy) = &c.remedy {
            out.push_str(&format!("       fix: {remedy}\n"));
        }
    }
    out.push_str(if report.ok {
        "\nNothing blocks a rebuild.\n"
    } else {
        "\nA rebuild would fail: fix the FAIL lines above and run `rebox preflight` again.\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipathd_claiming_longhorns_devices_is_a_warning() {
        let status = |state: &str, conf: &str| {
            let mut r = Report::default();
            check_multipath(state, conf, &mut r);
            r.checks[0].status
        };
        assert_eq!(
            status("active", "defaults {\n user_friendly_names yes\n}\n"),
            Status::Warn
        );
        assert_eq!(
            status("active", "blacklist {\n    devnode \"^sd[a-z0-9]+\"\n}\n"),
            Status::Pass
        );
        assert_eq!(status("inactive", ""), Status::Pass);
    }

    #[test]
    fn nas_host_with_shell_syntax_is_refused_and_the_probe_never_runs_it() {
        assert_eq!(nas_endpoint("nfs://nas.lan;touch /tmp/x:/v"), None);
        assert_eq!(nas_endpoint("nfs://$(id):/v"), None);
        assert_eq!(nas_endpoint("nfs://-oProxy:/v"), None);
        // Even a host that slipped through is an argument of the inner shell, not its code.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let evil = format!("x;touch {}", marker.display());
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(nas_probe(&evil, 9))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(!marker.exists(), "the probe ran the host as a command");
    }

    #[test]
    fn nas_probe_reaches_a_listening_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(nas_probe("127.0.0.1", port))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    #[test]
    fn nas_endpoints_from_targets() {
        assert_eq!(
            nas_endpoint("nfs://nas.lan:/volume1/lh"),
            Some(("nas.lan".into(), 2049))
        );
        assert_eq!(
            nas_endpoint("cifs://10.0.0.9/backups"),
            Some(("10.0.0.9".into(), 445))
        );
        assert_eq!(nas_endpoint("s3://bucket@us-east-1/"), None);
    }

    #[test]
    fn listening_ports_are_found() {
        let ss = "LISTEN 0 4096 127.0.0.1:6443 0.0.0.0:*\nLISTEN 0 128 [::]:22 [::]:*\n";
        assert!(port_listening(ss, 6443));
        assert!(!port_listening(ss, 10250));
        assert!(!port_listening(ss, 644));
    }

    #[test]
    fn os_mismatch_fails_unless_allowed() {
        let debian =
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";
        let ubuntu = "PRETTY_NAME=\"Ubuntu 26.04 LTS\"\nID=ubuntu\nVERSION_ID=\"26.04\"\n";
        let req = Requirements::default();
        let mut r = Report::default();
        check_os(debian, &req, false, &mut r);
        check_os(debian, &req, true, &mut r);
        check_os(ubuntu, &req, false, &mut r);
        let s: Vec<Status> = r.checks.iter().map(|c| c.status).collect();
        assert_eq!(s, vec![Status::Fail, Status::Warn, Status::Pass]);
    }
}
