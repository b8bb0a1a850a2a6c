//! Helpers shared by the `rebox status` / `doctor` / `unseal` lab tests: a healthy lab (a
//! fresh rebuild), the guide's scenarios made with real kubectl on the lab server, and the
//! commands' JSON reports.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, lab_bundle, Lab};
use rebox_lab::server::LabOptions;

/// Where lab-k3s keeps its fault switches on the lab server.
pub const FAULTS: &str = "/var/lib/rancher/k3s/lab-faults.json";

/// A lab rebuilt from scratch (fresh path): everything healthy. `clock_speed` > 1 makes the
/// CronJobs fire that many times faster (lab-k3s reads it from the k3s unit's environment).
pub fn healthy_lab(clock_speed: u32) -> (Lab, PathBuf) {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    if clock_speed > 1 {
        lab.server
            .run_as_root_ok(&format!(
                "echo LAB_CLOCK_SPEED={clock_speed} >> /etc/default/k3s"
            ))
            .unwrap();
    }
    let bundle = lab_bundle(lab.dir.path());
    let out = lab
        .rebox_with_keys(&["--yes", "rebuild"], &bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (lab, bundle)
}

/// `kubectl …` on the lab server, exit status checked.
pub fn kubectl(lab: &Lab, args: &str) -> String {
    lab.kubectl(args)
}

pub fn suspend(lab: &Lab, cronjob: &str, suspend: bool) {
    kubectl(
        lab,
        &format!(
            "-n security patch cronjob {cronjob} --type=merge -p '{{\"spec\":{{\"suspend\":{suspend}}}}}'"
        ),
    );
}

/// Seals Vault as a crash does (bao killed, started again sealed by the kubelet) and waits
/// for vault-0 to turn unready.
pub fn seal(lab: &Lab) {
    lab.server.run_as_root_ok(&common::restart_vault()).unwrap();
    kubectl(
        lab,
        "-n security wait --for=condition=Ready=false pod/vault-0 --timeout=60s",
    );
}

/// Writes the lab's fault switches (JSON) on the server.
pub fn set_faults(lab: &Lab, json: &str) {
    lab.server
        .run_as_root_ok(&format!("printf '%s' '{json}' > {FAULTS}"))
        .unwrap();
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `rebox --json doctor …` → (exit code, report, stderr).
pub fn doctor(lab: &Lab, extra: &[&str]) -> (i32, Value, String) {
    let out = lab
        .rebox()
        .args(["--json", "doctor"])
        .args(lab.conn_args())
        .args(extra)
        .output()
        .unwrap();
    parse(out, "doctor")
}

/// `rebox --json --yes doctor --fix …` → (exit code, fix report, stderr).
pub fn doctor_fix(lab: &Lab, extra: &[&str]) -> (i32, Value, String) {
    let out = lab
        .rebox()
        .args(["--json", "--yes", "doctor", "--fix"])
        .args(lab.conn_args())
        .args(extra)
        .output()
        .unwrap();
    parse(out, "doctor --fix")
}

/// [`doctor_fix`] with the lab's offline backup and age identity (`--from`, `--key-identity`).
pub fn doctor_fix_with_backup(lab: &Lab) -> (i32, Value, String) {
    let (id, _) = lab.age_identity();
    let backup = lab.backup_path();
    doctor_fix(
        lab,
        &[
            "--from",
            backup.to_str().unwrap(),
            "--key-identity",
            id.to_str().unwrap(),
        ],
    )
}

pub fn parse(out: Output, what: &str) -> (i32, Value, String) {
    let stderr = text(&out.stderr);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "rebox {what} printed no JSON ({e}); stdout: {}\nstderr: {stderr}",
            text(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), v, stderr)
}

/// The check with this id.
pub fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks in {report:#}"))
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

pub fn verdict<'a>(report: &'a Value, id: &str) -> &'a str {
    check(report, id)["verdict"].as_str().unwrap()
}

/// All of a check's text (summary, evidence, fix) for `contains` assertions.
pub fn all_text(report: &Value, id: &str) -> String {
    check(report, id).to_string()
}

/// Asserts every check is ok, naming the ones that are not.
pub fn assert_clean(report: &Value) {
    let bad: Vec<String> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] != "ok")
        .map(|c| format!("{}: {} {}", c["id"], c["verdict"], c["summary"]))
        .collect();
    assert!(
        bad.is_empty(),
        "not a clean bill of health:\n{}",
        bad.join("\n")
    );
    assert_eq!(report["ok"], true);
}

/// The fix applied for `kind` in a fix report.
pub fn fix<'a>(report: &'a Value, kind: &str) -> &'a Value {
    report["fixes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["action"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} fix in {:#}", report["fixes"]))
}

/// Polls `cond` (a cluster state read with kubectl) until true, up to `secs`.
pub fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
