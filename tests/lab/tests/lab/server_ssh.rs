//! The lab server seen through the real OpenSSH client, as rebox will see it.
//! Needs root (network namespaces, mounts).

use rebox_lab::server::{LabOptions, LabServer, OS_RELEASE_DEBIAN_12};
use std::path::Path;
use std::process::{Command, Output};

/// `ssh -i key -o UserKnownHostsFile=<file> homelab@addr remote`, built by hand (not with
/// `LabServer::ssh`) so the test checks the documented accessors.
fn ssh(lab: &LabServer, known_hosts: &Path, key: &Path, remote: &str) -> Output {
    Command::new("ssh")
        .arg("-i")
        .arg(key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .args(["-o", "IdentitiesOnly=yes", "-F", "/dev/null"])
        .arg(format!("homelab@{}", lab.addr()))
        .arg(remote)
        .output()
        .expect("run ssh")
}

fn known_hosts(dir: &Path, line: &str) -> std::path::PathBuf {
    let p = dir.join("known_hosts");
    std::fs::write(&p, format!("{line}\n")).unwrap();
    p
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "ssh failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

#[test]
fn ssh_sudo_hostname_os_release_and_overlay() {
    let lab = LabServer::start(LabOptions {
        name_hint: Some("node1".into()),
        ..Default::default()
    })
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kh = known_hosts(tmp.path(), &lab.known_hosts_line());
    assert!(lab
        .known_hosts_line()
        .starts_with(&format!("{} ssh-ed25519 AAAA", lab.addr())));
    assert!(lab.host_key_fingerprint().starts_with("SHA256:"));
    let key = lab.client_key();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    assert_eq!(ok(ssh(&lab, &kh, key, "sudo -n id -u")), "0");
    assert_eq!(ok(ssh(&lab, &kh, key, "id -un")), "homelab");
    assert_eq!(ok(ssh(&lab, &kh, key, "hostname")), "node1");
    assert_eq!(lab.name(), "node1");

    let os = ok(ssh(&lab, &kh, key, "cat /etc/os-release"));
    assert!(os.lines().any(|l| l == "ID=ubuntu"), "{os}");
    assert!(os.lines().any(|l| l == "VERSION_ID=\"26.04\""), "{os}");
    assert!(os.contains("PRETTY_NAME=\"Ubuntu 26.04 LTS\""), "{os}");
    // /usr/lib/os-release too (what /etc/os-release links to on Debian and Ubuntu).
    let os2 = ok(ssh(
        &lab,
        &kh,
        key,
        ". /usr/lib/os-release && echo $ID $VERSION_ID",
    ));
    assert_eq!(os2, "ubuntu 26.04");

    // The fingerprint is the one ssh-keygen prints for what the server presents.
    let scan = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&kh)
        .output()
        .unwrap();
    assert!(stdout(&scan).contains(&lab.host_key_fingerprint()));

    // A write inside lands in the upper dir, not on the host.
    let marker = format!("/etc/rebox-lab-test-{}", lab.netns());
    ok(ssh(
        &lab,
        &kh,
        key,
        &format!("echo hello | sudo -n tee {marker} >/dev/null"),
    ));
    assert_eq!(
        std::fs::read_to_string(lab.path(&marker)).unwrap(),
        "hello\n"
    );
    assert!(
        !Path::new(&marker).exists(),
        "{marker} leaked onto the host"
    );
    assert!(lab.path("/home/homelab/.ssh/authorized_keys").exists());
    // Nor is the homelab user on the host.
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(!host_passwd.lines().any(|l| l.starts_with("homelab:")));

    // The root file system looks like a disk of the default size.
    let df = ok(ssh(&lab, &kh, key, "df -P -B1G / | tail -n 1"));
    assert_eq!(df.split_whitespace().nth(1), Some("64"), "{df}");

    // run_as_root works inside the same server.
    lab.run_as_root_ok("mkdir -p /usr/local/bin && touch /usr/local/bin/k3s")
        .unwrap();
    assert!(lab.path("/usr/local/bin/k3s").exists());
    assert!(!Path::new("/usr/local/bin/k3s").exists());
    assert_eq!(
        ok(ssh(
            &lab,
            &kh,
            key,
            "test -e /usr/local/bin/k3s && echo yes"
        )),
        "yes"
    );
    assert_eq!(lab.run_as_root_ok("hostname").unwrap().trim(), "node1");
    assert!(lab.merged_path("/etc/os-release").exists());

    // An unknown host key is refused by ssh (the known_hosts file really matters).
    let other = tempfile::tempdir().unwrap();
    let empty = known_hosts(other.path(), "");
    let o = ssh(&lab, &empty, key, "true");
    assert!(!o.status.success());
}

#[test]
fn two_labs_at_once_have_different_addresses() {
    let a = LabServer::start(LabOptions::default()).unwrap();
    let b = LabServer::start(LabOptions::default()).unwrap();
    assert_ne!(a.addr(), b.addr());
    assert_ne!(a.netns(), b.netns());
    assert_ne!(a.host_key_fingerprint(), b.host_key_fingerprint());
    for lab in [&a, &b] {
        let out = lab.ssh("hostname").output().unwrap();
        assert_eq!(ok(out), lab.name());
    }
    // One lab's writes are not in the other.
    a.run_as_root_ok("touch /root/only-in-a").unwrap();
    assert!(a.path("/root/only-in-a").exists());
    assert!(!b.path("/root/only-in-a").exists());
    assert!(!b
        .run_as_root("test -e /root/only-in-a")
        .unwrap()
        .status
        .success());
}

#[test]
fn rebuild_changes_the_host_key_but_not_the_address() {
    let mut lab = LabServer::start(LabOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let old_kh = known_hosts(tmp.path(), &lab.known_hosts_line());
    let (addr, fp, name) = (
        lab.addr(),
        lab.host_key_fingerprint(),
        lab.name().to_string(),
    );
    lab.run_as_root_ok("touch /etc/before-rebuild").unwrap();

    lab.rebuild().unwrap();
    assert_eq!(lab.addr(), addr);
    assert_eq!(lab.name(), name);
    assert_ne!(lab.host_key_fingerprint(), fp);
    assert!(
        !lab.path("/etc/before-rebuild").exists(),
        "rebuild kept the old overlay"
    );

    // The old known_hosts entry no longer matches; the new one does, with the same client key.
    let o = ssh(&lab, &old_kh, lab.client_key(), "true");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let new_dir = tempfile::tempdir().unwrap();
    let new_kh = known_hosts(new_dir.path(), &lab.known_hosts_line());
    assert_eq!(
        ok(ssh(&lab, &new_kh, lab.client_key(), "sudo -n id -u")),
        "0"
    );
}

#[test]
fn sudo_can_require_a_password() {
    let lab = LabServer::start(LabOptions {
        sudo_nopasswd: false,
        ..Default::default()
    })
    .unwrap();
    let o = lab.ssh("sudo -n true").output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("a password is required"), "{err}");
    // The user can still sudo with its password (it is a real sudoer).
    let o = lab
        .ssh("echo homelab | sudo -S -p '' id -u")
        .output()
        .unwrap();
    assert_eq!(ok(o), "0");
}

#[test]
fn other_os_release_and_extra_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let rsa = tmp.path().join("id_rsa");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&rsa)
        .status()
        .unwrap();
    assert!(st.success());
    let rsa_pub = std::fs::read_to_string(rsa.with_extension("pub")).unwrap();
    let lab = LabServer::start(LabOptions {
        os_release: Some(OS_RELEASE_DEBIAN_12.into()),
        extra_authorized_keys: vec![rsa_pub],
        disk_size: Some("2G".into()),
        ..Default::default()
    })
    .unwrap();
    let kh = known_hosts(tmp.path(), &lab.known_hosts_line());
    let os = ok(ssh(
        &lab,
        &kh,
        &rsa,
        ". /etc/os-release && echo $ID $VERSION_ID",
    ));
    assert_eq!(os, "debian 12");
    let df = ok(ssh(&lab, &kh, &rsa, "df -P -B1G / | tail -n 1"));
    assert_eq!(df.split_whitespace().nth(1), Some("2"), "{df}");
    // The per-lab ed25519 key still works, and a stranger's key does not.
    assert_eq!(ok(ssh(&lab, &kh, lab.client_key(), "id -un")), "homelab");
    let stranger = tmp.path().join("id_stranger");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    let o = ssh(&lab, &kh, &stranger, "true");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Permission denied"));
}

#[test]
fn stop_sshd_closes_the_port_and_start_reopens_it() {
    let lab = LabServer::start(LabOptions::default()).unwrap();
    lab.stop_sshd().unwrap();
    let o = lab.ssh("true").output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Connection refused"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The server is still there for run_as_root.
    assert_eq!(lab.run_as_root_ok("echo up").unwrap().trim(), "up");
    lab.start_sshd().unwrap();
    assert_eq!(ok(lab.ssh("echo back").output().unwrap()), "back");
}

#[test]
fn a_listener_inside_is_reachable_only_inside() {
    let lab = LabServer::start(LabOptions::default()).unwrap();
    // A listener on the server's loopback (what SSH tunnel tests forward to).
    let mut listener = lab
        .spawn_as_root(
            "exec perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalAddr => \"127.0.0.1\", \
             LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die; $c = $s->accept; \
             print $c \"hi-from-lab\\n\"; close $c'",
        )
        .unwrap();
    let got = lab
        .run_as_root_ok(
            "for i in $(seq 50); do exec 3<>/dev/tcp/127.0.0.1/8080 2>/dev/null && break; sleep 0.1; done; cat <&3",
        )
        .unwrap();
    assert_eq!(got.trim(), "hi-from-lab");
    // It served its one connection and exits: reap it.
    let _ = listener.wait();
    // Processes inside are only the lab's: the PID namespace hides the host.
    let ps = lab.run_as_root_ok("ps -e -o pid=,comm=").unwrap();
    assert!(ps.contains("sshd"), "{ps}");
    assert!(
        ps.lines().count() < 20,
        "host processes visible inside:\n{ps}"
    );
}
