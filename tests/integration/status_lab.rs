//! `rebox status [--watch]` against lab servers: the checklist of a healthy and of a broken
//! lab, and the power-loss drill: k3s stopped and started again, and `status --watch`
//! reporting each step of the self-healing sequence, in order, until everything is healthy.

use crate::{common, doctor_support};
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use doctor_support::*;
use serde_json::Value;

const SEQUENCE: [&str; 8] = [
    "k3s-api",
    "node",
    "longhorn-volumes",
    "vault",
    "unseal-cronjob",
    "secret-store",
    "external-secrets",
    "argocd-apps",
];

#[test]
fn status_checklist_of_a_healthy_then_a_sealed_lab() {
    let (lab, _) = healthy_lab(1);
    let out = lab
        .rebox()
        .args(["--json", "status"])
        .args(lab.conn_args())
        .output()
        .unwrap();
    let (code, report, stderr) = parse(out, "status");
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["ok"], true);
    let ids: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, SEQUENCE);
    assert!(
        check(&report, "longhorn-volumes")["summary"]
            .as_str()
            .unwrap()
            .starts_with("vault-data-lh attached"),
        "{report:#}"
    );
    assert!(
        check(&report, "argocd-apps")["summary"]
            .as_str()
            .unwrap()
            .contains("1/1 Synced and Healthy"),
        "{report:#}"
    );

    suspend(&lab, "vault-auto-unseal", true);
    seal(&lab);
    let out = lab
        .rebox()
        .arg("status")
        .args(lab.conn_args())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let human = text(&out.stdout);
    assert!(
        human
            .lines()
            .any(|l| l.contains("FAIL") && l.contains("Vault") && l.contains("sealed")),
        "{human}"
    );
    assert!(human.contains("rebox doctor"), "{human}");

    // Ctrl-C ends a watch that cannot finish, with what is still not healthy.
    let mut child = watch_command(&lab, &["--json", "status", "--watch"])
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("\"event\":\"step\""), "{line}");
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    let last: Value = serde_json::from_str(rest.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "interrupted", "{rest}");
    assert!(
        last["not_healthy"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "Vault"),
        "{last}"
    );

    // k3s down: both commands say so, and what to do; nothing else is guessed at.
    lab.server.run_as_root_ok("systemctl stop k3s").unwrap();
    let out = lab
        .rebox()
        .args(["--json", "status"])
        .args(lab.conn_args())
        .output()
        .unwrap();
    let (code, report, _) = parse(out, "status");
    assert_eq!(code, 2);
    assert_eq!(verdict(&report, "k3s-api"), "fail");
    assert_eq!(verdict(&report, "vault"), "skip");
    let (code, report, _) = doctor(&lab, &[]);
    assert_eq!(code, 2);
    let api = all_text(&report, "k3s-api");
    assert!(
        api.contains("does not answer") && api.contains("sudo systemctl restart k3s"),
        "{api}"
    );
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["id"] != "k3s-api")
            .all(|c| c["verdict"] == "skip"),
        "{report:#}"
    );
}

/// Reads `status --watch --json` lines until the final event (or the deadline).
struct Watch {
    child: std::process::Child,
    rx: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Watch {
    /// The next event; panics with everything seen so far on timeout.
    fn next(&mut self, secs: u64) -> Value {
        match self.rx.recv_timeout(Duration::from_secs(secs)) {
            Ok(v) => {
                self.seen.push(v.clone());
                v
            }
            Err(_) => panic!(
                "status --watch: no event within {secs}s; so far:\n{}",
                self.dump()
            ),
        }
    }
    /// Events until one matches.
    fn until(&mut self, secs: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline
                .saturating_duration_since(std::time::Instant::now())
                .as_secs()
                .max(1);
            let v = self.next(left);
            if pred(&v) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never saw {what}:\n{}",
                self.dump()
            );
        }
    }
    fn dump(&self) -> String {
        self.seen
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `rebox ARGS` with the lab's flags, stdout piped (lines are read as they come).
fn watch_command(lab: &common::Lab, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("rebox"));
    cmd.env("HOME", lab.dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .arg("--config")
        .arg(lab.dir.path().join("rebox.toml"))
        .args(args)
        .args(lab.conn_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

fn is_step(v: &Value, id: &str, verdict: &str) -> bool {
    v["event"] == "step" && v["id"] == id && v["verdict"] == verdict
}

#[test]
fn status_watch_follows_the_power_loss_drill_in_order_until_healthy() {
    // CronJobs 20× faster: vault-auto-unseal every 3s, eso-recovery every 6s.
    let (lab, _) = healthy_lab(20);
    // An app secret synced by ESO from Vault's KV, so the drill ends with ExternalSecrets
    // syncing.
    let shares = common::backup_shares_of(&lab.decrypted_backup(&lab.backup_path()));
    lab.vault_kv_put(
        &shares,
        "app/db",
        serde_json::json!({"password": "lab-only"}),
    );
    lab.server
        .run_as_root_ok(
            "KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl apply -f - <<'YAML'
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: app-db, namespace: default}
spec:
  secretStoreRef: {name: k8s-secrets, kind: ClusterSecretStore}
  target: {name: app-db}
  data:
    - secretKey: password
      remoteRef: {key: app/db, property: password}
YAML",
        )
        .unwrap();
    kubectl(
        &lab,
        "-n default wait --for=condition=Ready externalsecret/app-db --timeout=60s",
    );
    // The unseal CronJob is held until the watch has seen Vault sealed (else at this clock
    // speed it could heal Vault before the watch connects); it does the healing itself.
    suspend(&lab, "vault-auto-unseal", true);

    // Power loss: k3s (and with it every pod, Vault included) stops.
    lab.server.run_as_root_ok("systemctl stop k3s").unwrap();
    let mut child = watch_command(&lab, &["--json", "status", "--watch", "--timeout", "150"])
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    let mut w = Watch {
        child,
        rx,
        seen: vec![],
    };
    w.until(60, "the API reported down", |v| {
        is_step(v, "k3s-api", "fail")
    });
    // Power back.
    lab.server.run_as_root_ok("systemctl start k3s").unwrap();
    w.until(60, "the API up", |v| is_step(v, "k3s-api", "ok"));
    w.until(60, "Vault sealed", |v| {
        is_step(v, "vault", "fail") && v["summary"].as_str().unwrap_or("").starts_with("sealed")
    });
    w.until(60, "the store degraded", |v| {
        is_step(v, "secret-store", "fail")
    });
    suspend(&lab, "vault-auto-unseal", false);
    let done = w.until(120, "healthy", |v| v["event"] != "step");
    assert_eq!(done["event"], "healthy", "{}", w.dump());
    let status = w.child.wait().unwrap();
    assert!(status.success(), "{}", w.dump());

    // Each step became healthy in the order of the recovery sequence.
    let at = |id: &str| -> f64 {
        done["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .and_then(|s| s["healthy_after_secs"].as_f64())
            .unwrap_or_else(|| panic!("no time for {id}: {done}"))
    };
    let order = [
        "k3s-api",
        "node",
        "longhorn-volumes",
        "vault",
        "secret-store",
        "external-secrets",
    ];
    for pair in order.windows(2) {
        assert!(
            at(pair[0]) <= at(pair[1]),
            "{} became healthy after {}: {done}",
            pair[0],
            pair[1]
        );
    }
    // The healing was the cluster's own: Vault unsealed by a run of the CronJob, the store
    // and the ExternalSecret recovered after it.
    let events = &w.seen;
    let pos = |pred: &dyn Fn(&Value) -> bool| events.iter().position(pred).unwrap_or(usize::MAX);
    let vault_ok = pos(&|v| is_step(v, "vault", "ok"));
    let store_ok = pos(&|v| is_step(v, "secret-store", "ok"));
    let es_ok = pos(&|v| is_step(v, "external-secrets", "ok") && v["summary"] == "1/1 synced");
    // (Two watches may deliver the store and the ExternalSecret of one ESO pass in either
    // order: those two are compared by time above, Vault by position here.)
    assert!(vault_ok < store_ok && vault_ok < es_ok, "{}", w.dump());
    assert!(
        es_ok < events.len() && store_ok < events.len(),
        "{}",
        w.dump()
    );
    assert!(
        events
            .iter()
            .any(|v| is_step(v, "external-secrets", "fail")),
        "{}",
        w.dump()
    );
    let last_cj = events
        .iter()
        .rev()
        .find(|v| v["id"] == "unseal-cronjob")
        .unwrap();
    assert!(
        last_cj["summary"].as_str().unwrap().contains("succeeded"),
        "{}",
        w.dump()
    );
    let store_at = at("secret-store");
    assert!(done["after_secs"].as_f64().unwrap() >= store_at);
}
