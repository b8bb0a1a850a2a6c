//! Nothing of a lab server is left behind: after drop, after a panic, after a crash.
//! Needs root. Other labs may run at the same time (other tests, other engineers), so the
//! checks look for *this* lab's netns, veth, processes, mounts and dirs.

use rebox_lab::server::{cleanup_stale, LabInfo, LabOptions, LabServer};
use std::path::Path;
use std::process::Command;

struct Traces {
    netns: String,
    veth: String,
    scratch: std::path::PathBuf,
    registry: std::path::PathBuf,
    /// Host PIDs (with start times) of every process in the lab's netns: holder, sshd, ...
    pids: Vec<(u32, String)>,
}

fn stat_start(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // A zombie is not left running (it waits for its parent, maybe this test, to reap it).
    if f[0] == "Z" {
        return None;
    }
    Some(f.get(19)?.to_string())
}

fn traces(info: &LabInfo) -> Traces {
    let out = Command::new("ip")
        .args(["netns", "pids", &info.netns])
        .output()
        .unwrap();
    let pids: Vec<(u32, String)> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter_map(|p| Some((p, stat_start(p)?)))
        .collect();
    Traces {
        netns: info.netns.clone(),
        veth: info.veth.clone(),
        scratch: info.scratch_dir.clone(),
        registry: Path::new(rebox_lab::server::REGISTRY_DIR).join(&info.netns),
        pids,
    }
}

fn assert_running(t: &Traces) {
    assert!(netns_exists(&t.netns));
    assert!(link_exists(&t.veth));
    assert!(
        t.pids.len() >= 2,
        "expected holder + sshd, got {:?}",
        t.pids
    );
    assert!(mounts().contains(t.scratch.to_str().unwrap()));
}

fn assert_gone(t: &Traces) {
    assert!(!netns_exists(&t.netns), "netns {} left behind", t.netns);
    assert!(!link_exists(&t.veth), "veth {} left behind", t.veth);
    for (pid, start) in &t.pids {
        assert_ne!(
            stat_start(*pid).as_ref(),
            Some(start),
            "process {pid} left behind"
        );
    }
    let m = mounts();
    assert!(
        !m.contains(t.scratch.to_str().unwrap()) && !m.contains(&t.netns),
        "mounts left behind:\n{m}"
    );
    assert!(!t.scratch.exists(), "{} left behind", t.scratch.display());
    assert!(!t.registry.exists(), "{} left behind", t.registry.display());
}

fn netns_exists(ns: &str) -> bool {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(ns))
}

fn link_exists(dev: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", dev])
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn mounts() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

#[test]
fn drop_leaves_nothing_behind() {
    let lab = LabServer::start(LabOptions::default()).unwrap();
    // A background process inside, too.
    let mut child = lab.spawn_as_root("exec sleep 1000").unwrap();
    let out = lab.run_as_root_ok("pgrep -x sleep | wc -l").unwrap();
    assert!(out.trim().parse::<u32>().unwrap() >= 1);
    // Killing a spawned child kills the command inside; a forked daemon survives.
    let mut other = lab.spawn_as_root("exec sleep 2000").unwrap();
    lab.run_as_root_ok("sleep 3000 >/dev/null 2>&1 &").unwrap();
    let count = |pat: &str| {
        lab.run_as_root_ok(&format!("pgrep -fx '{pat}' | wc -l"))
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    for _ in 0..100 {
        if count("sleep 2000") == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(count("sleep 2000"), 1);
    other.kill().unwrap();
    other.wait().unwrap();
    for _ in 0..100 {
        if count("sleep 2000") == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        count("sleep 2000"),
        0,
        "killed spawn_as_root child survives inside"
    );
    assert_eq!(
        count("sleep 3000"),
        1,
        "a background process died with run_as_root"
    );
    let t = traces(lab.info());
    assert_running(&t);
    drop(lab);
    assert_gone(&t);
    // The nsenter on the host ends with the lab.
    let st = child.wait().unwrap();
    assert!(!st.success());
}

#[test]
fn stop_leaves_nothing_behind_after_rebuild() {
    let mut lab = LabServer::start(LabOptions::default()).unwrap();
    lab.rebuild().unwrap();
    let t = traces(lab.info());
    assert_running(&t);
    lab.stop().unwrap();
    assert_gone(&t);
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let lab = LabServer::start(LabOptions::default()).unwrap();
        tx.send(traces(lab.info())).unwrap();
        panic!("the test fails while the lab runs");
    })
    .join();
    assert!(r.is_err());
    let t = rx.recv().unwrap();
    assert_gone(&t);
}

fn rebox_lab(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rebox-lab"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn binary_up_down_and_cleanup_of_a_crashed_lab() {
    // `server up` leaves a persistent lab and prints its JSON.
    let out = rebox_lab(&["server", "up", "--name", "scripted"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: LabInfo = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info.name, "scripted");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "name",
        "addr",
        "client_key",
        "host_key_fingerprint",
        "known_hosts_line",
    ] {
        assert!(v.get(k).is_some(), "{k} missing in {v}");
    }
    let t = traces(&info);
    assert_running(&t);

    // It survives the command, and cleanup leaves a live persistent lab alone.
    let lab = LabServer::attach(&info.netns).unwrap();
    assert_eq!(lab.run_as_root_ok("hostname").unwrap().trim(), "scripted");
    cleanup_stale().unwrap();
    assert!(netns_exists(&info.netns));
    let o = lab.ssh("sudo -n id -u").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0");
    drop(lab); // attach does not own the lab: still running
    assert!(netns_exists(&info.netns));

    // `server down` from another process removes it.
    let out = rebox_lab(&["server", "down", &info.netns]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_gone(&t);

    // A crashed lab (its holder died without cleanup): `cleanup` removes the leftovers.
    let out = rebox_lab(&["server", "up"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: LabInfo = serde_json::from_slice(&out.stdout).unwrap();
    let t = traces(&info);
    Command::new("kill")
        .args(["-KILL", &info.holder_pid.to_string()])
        .status()
        .unwrap();
    for _ in 0..100 {
        if stat_start(info.holder_pid).is_none() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(netns_exists(&info.netns), "nothing to clean up?");
    let out = rebox_lab(&["cleanup"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_gone(&t);
}

#[test]
fn cleanup_removes_labs_of_dead_owners_only() {
    // A lab owned by a process that is killed before it can clean up.
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "server_cleanup::owner_process_that_gets_killed",
            "--ignored",
            "--nocapture",
        ])
        .env("REBOX_LAB_TEST_OWNER", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // libtest prints its own lines first.
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let netns = loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        assert!(n > 0, "owner process ended without starting a lab");
        if let Some(ns) = line.trim().strip_prefix("LAB ") {
            break ns.to_string();
        }
    };
    let info = LabServer::attach(&netns).unwrap().info().clone();
    let t = traces(&info);
    assert_running(&t);

    // Ours (alive owner) is never touched.
    let mine = LabServer::start(LabOptions::default()).unwrap();
    cleanup_stale().unwrap();
    assert!(netns_exists(&netns), "a lab of a live owner was removed");

    child.kill().unwrap();
    child.wait().unwrap();
    // Another test of this binary may run a cleanup at the same moment and be the one that
    // removes it, so the proof is that it is gone, not this call's count.
    cleanup_stale().unwrap();
    assert_gone(&t);
    assert_eq!(mine.run_as_root_ok("echo alive").unwrap().trim(), "alive");
}

/// Helper for `cleanup_removes_labs_of_dead_owners_only` (runs in a child process).
#[test]
#[ignore]
fn owner_process_that_gets_killed() {
    if std::env::var("REBOX_LAB_TEST_OWNER").is_err() {
        return;
    }
    let lab = LabServer::start(LabOptions::default()).unwrap();
    println!("LAB {}", lab.netns());
    std::thread::sleep(std::time::Duration::from_secs(600));
    drop(lab);
}
