//! The lab server's systemd stand-ins: a unit enabled with `systemctl enable --now` runs, is
//! restarted after it dies when Restart=always, and stops; timedatectl reports sync.

use std::time::{Duration, Instant};

use rebox_lab::server::{LabOptions, LabServer};

fn wait_for(lab: &LabServer, what: &str, cond: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lab.run_as_root(cond).unwrap().status.success() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn server_systemctl_runs_restarts_and_stops_a_unit() {
    let lab = LabServer::start(LabOptions::default()).unwrap();
    lab.run_as_root_ok(
        "cat > /etc/systemd/system/demo.service <<'UNIT'\n[Service]\nEnvironmentFile=-/etc/demo.env\nExecStart=/bin/sh -c 'echo started $GREETING; exec sleep 1000'\nRestart=always\nRestartSec=0\nUNIT\necho GREETING=hello > /etc/demo.env",
    )
    .unwrap();
    assert!(!lab
        .run_as_root("systemctl is-active --quiet demo")
        .unwrap()
        .status
        .success());
    lab.run_as_root_ok("systemctl daemon-reload && systemctl enable --now demo")
        .unwrap();
    assert_eq!(
        lab.run_as_root_ok("systemctl is-active demo")
            .unwrap()
            .trim(),
        "active"
    );
    assert_eq!(
        lab.run_as_root_ok("systemctl is-enabled demo")
            .unwrap()
            .trim(),
        "enabled"
    );
    wait_for(
        &lab,
        "the service's output",
        "grep -q 'started hello' /var/log/lab-systemd/demo.service.log",
    );

    // Kill the service itself (a crash): the supervisor starts it again.
    lab.run_as_root_ok("pkill -KILL -f '^sleep 1000'").unwrap();
    wait_for(
        &lab,
        "the restart",
        "[ $(grep -c 'started hello' /var/log/lab-systemd/demo.service.log) -ge 2 ]",
    );

    lab.run_as_root_ok("systemctl stop demo").unwrap();
    assert!(!lab
        .run_as_root("systemctl is-active --quiet demo")
        .unwrap()
        .status
        .success());
    assert!(
        !lab.run_as_root("pgrep -f '^sleep 1000'")
            .unwrap()
            .status
            .success(),
        "the service survived stop"
    );
    let missing = lab.run_as_root("systemctl start nope").unwrap();
    assert_eq!(missing.status.code(), Some(5));
}

#[test]
fn server_timedatectl_reports_sync() {
    let lab = LabServer::start(LabOptions::default()).unwrap();
    assert_eq!(
        lab.run_as_root_ok("timedatectl show -p NTPSynchronized --value")
            .unwrap()
            .trim(),
        "yes"
    );
}

#[test]
fn server_apt_installs_the_longhorn_packages_from_the_lab_mirror() {
    let lab = LabServer::start(LabOptions::default()).unwrap();
    let before = lab
        .run_as_root("dpkg-query -W -f='${db:Status-Abbrev}' open-iscsi")
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&before.stdout).starts_with("ii"),
        "open-iscsi is there before install"
    );
    lab.run_as_root_ok("DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq open-iscsi nfs-common")
        .unwrap();
    let after = lab
        .run_as_root_ok(
            "dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' open-iscsi nfs-common",
        )
        .unwrap();
    assert!(
        after.contains("open-iscsi ii") && after.contains("nfs-common ii"),
        "{after}"
    );
    lab.run_as_root_ok("systemctl enable --now iscsid").unwrap();
    assert_eq!(
        lab.run_as_root_ok("systemctl is-active iscsid")
            .unwrap()
            .trim(),
        "active"
    );
    // The host's own package database is untouched.
    let host = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", "open-iscsi"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).starts_with("ii"));
}

#[test]
fn server_systemctl_is_active_answers_unprivileged_users() {
    let lab = LabServer::start(LabOptions::default()).unwrap();
    lab.run_as_root_ok("printf '[Service]\\nExecStart=/bin/sleep 1000\\n' > /etc/systemd/system/quiet.service && systemctl start quiet")
        .unwrap();
    // A login's PATH (no sbin), as over SSH.
    let out = lab
        .run_as_root_ok(
            "su homelab -c 'PATH=/usr/local/bin:/usr/bin:/bin systemctl is-active quiet'",
        )
        .unwrap();
    assert_eq!(out.trim(), "active");
}

#[test]
fn server_stand_ins_replace_systemd_tools_only_inside_the_lab() {
    let lab = LabServer::start(LabOptions::default()).unwrap();
    let inside = std::fs::read_to_string(lab.path("/usr/bin/systemctl")).unwrap();
    assert!(inside.contains("systemctl stand-in"));
    let host = std::fs::read("/usr/bin/systemctl").unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&host).contains("systemctl stand-in"),
        "the host's systemctl was replaced"
    );
}
