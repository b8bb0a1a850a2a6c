//! The CronJob scripts run for real, exactly as rendered into the CronJobs (`/bin/sh -c
//! <script>` with the container's env), against OpenBao's real
//! server (`bao`).
//!
//! Every external command the scripts run goes through a logging wrapper (PATH holds only the
//! wrappers), so the tests see each argv: the unseal key must never appear in one, nor in the
//! script's output. A tool the script uses without declaring it fails the run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use rebox::config::Config;
use rebox::manifests::{self, RenderInputs};
use rebox_lab::bao::Bao;
use serde_json::Value;

/// The tools each image must hold (what the scripts' headers declare).
const UNSEAL_TOOLS: &[&str] = &["curl", "grep", "sed", "tr", "tail"];
/// eso-recovery also runs `kubectl`, replaced by [`fake_kubectl`].
const RECOVERY_TOOLS: &[&str] = &["curl", "tr"];

fn cronjob_container(name: &str) -> Value {
    let rendered = manifests::render_all(&Config::default(), &RenderInputs::online()).unwrap();
    let cj = rendered
        .iter()
        .flat_map(|m| &m.objects)
        .find(|o| o["kind"] == "CronJob" && o["metadata"]["name"] == name)
        .unwrap()
        .clone();
    cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].clone()
}

/// A directory of wrappers that log their argv to `<dir>/argv.log` and run the real tool.
fn wrappers(dir: &Path, tools: &[&str]) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("argv.log");
    for tool in tools {
        let real = which(tool);
        let wrapper = bin.join(tool);
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"{tool} $*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn which(tool: &str) -> PathBuf {
    for dir in ["/usr/local/bin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} is not installed on this machine (the script tests need it)");
}

/// Runs the container's command with its env, `overrides` on top, PATH = `path` only.
async fn run(container: &Value, path: &Path, overrides: &[(&str, String)]) -> Output {
    let argv: Vec<String> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear().env("PATH", path);
    for e in container["env"].as_array().unwrap() {
        cmd.env(e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
    }
    for (k, v) in overrides {
        cmd.env(k, v);
    }
    cmd.output().await.unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An initialised, sealed Vault (OpenBao's real server) with `shares` shares of which
/// `threshold` unseal it.
async fn sealed_vault(dir: &Path, shares: u32, threshold: u32) -> (Bao, Vec<String>) {
    let bao = Bao::start(dir.join("vault-data")).await.unwrap();
    let keys = bao.init(shares, threshold).await.keys;
    (bao, keys)
}

async fn seal_status(vault: &Bao) -> Value {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", &format!("{}/v1/sys/seal-status", vault.url())])
        .output()
        .await
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes the key file the Secret volume would hold: 0600, one share per line.
fn key_file(dir: &Path, content: &str) -> PathBuf {
    let path = dir.join("unseal-key");
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn assert_never_shown(dir: &Path, out: &Output, secrets: &[&str]) {
    let argv = std::fs::read_to_string(dir.join("argv.log")).unwrap_or_default();
    assert!(argv.contains("curl "), "the argv log works: {argv}");
    let shown = format!("{argv}\n{}", text(out));
    for s in secrets {
        assert!(!s.is_empty());
        assert!(
            !shown.contains(s),
            "a key share leaked into argv or output:\n{shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_unseal_script_unseals_a_one_share_vault_without_showing_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, keys) = sealed_vault(dir.path(), 1, 1).await;
    assert_eq!(seal_status(&vault).await["sealed"], true);
    // The file as the kubelet would project it from the Secret rebox creates.
    let secret = manifests::unseal_key_secret(&Config::default(), &[&keys[0]]);
    use base64::Engine;
    let projected = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["key"].as_str().unwrap())
        .unwrap();
    let key = key_file(dir.path(), &String::from_utf8(projected).unwrap());
    let path = wrappers(dir.path(), UNSEAL_TOOLS);
    let container = cronjob_container("vault-auto-unseal");
    let out = run(
        &container,
        &path,
        &[
            ("VAULT_ADDR", vault.url()),
            ("UNSEAL_KEY_FILE", key.display().to_string()),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Vault unsealed with 1 share(s)"),
        "{}",
        text(&out)
    );
    assert_eq!(seal_status(&vault).await["sealed"], false);
    assert_never_shown(dir.path(), &out, &[&keys[0]]);

    // A second run leaves the unsealed Vault alone: no unseal call.
    std::fs::remove_file(dir.path().join("argv.log")).unwrap();
    let out = run(
        &container,
        &path,
        &[
            ("VAULT_ADDR", vault.url()),
            ("UNSEAL_KEY_FILE", key.display().to_string()),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing to do"), "{}", text(&out));
    let argv = std::fs::read_to_string(dir.path().join("argv.log")).unwrap();
    assert!(!argv.contains("/v1/sys/unseal"), "{argv}");
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_unseal_script_unseals_three_of_five_shares() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, keys) = sealed_vault(dir.path(), 5, 3).await;
    // Three of the five, with the blank lines and stray spaces a hand-edited Secret may have.
    let key = key_file(
        dir.path(),
        &format!("{}\n\n  {}  \r\n{}", keys[4], keys[1], keys[2]),
    );
    let path = wrappers(dir.path(), UNSEAL_TOOLS);
    let out = run(
        &cronjob_container("vault-auto-unseal"),
        &path,
        &[
            ("VAULT_ADDR", vault.url()),
            ("UNSEAL_KEY_FILE", key.display().to_string()),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Vault unsealed with 3 share(s)"),
        "{}",
        text(&out)
    );
    assert_eq!(seal_status(&vault).await["sealed"], false);
    let all: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert_never_shown(dir.path(), &out, &all);
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_unseal_script_fails_with_too_few_shares() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, keys) = sealed_vault(dir.path(), 5, 3).await;
    let key = key_file(dir.path(), &format!("{}\n{}\n", keys[0], keys[3]));
    let path = wrappers(dir.path(), UNSEAL_TOOLS);
    let out = run(
        &cronjob_container("vault-auto-unseal"),
        &path,
        &[
            ("VAULT_ADDR", vault.url()),
            ("UNSEAL_KEY_FILE", key.display().to_string()),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("still sealed after 2 share(s)"),
        "{}",
        text(&out)
    );
    let status = seal_status(&vault).await;
    assert_eq!(status["sealed"], true);
    assert_eq!(status["progress"], 2);
    assert_never_shown(dir.path(), &out, &[&keys[0], &keys[3]]);
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_unseal_script_refuses_a_wrong_key_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _keys) = sealed_vault(dir.path(), 1, 1).await;
    let other = tempfile::tempdir().unwrap();
    let (_other_vault, wrong) = sealed_vault(other.path(), 1, 1).await;
    let key = key_file(dir.path(), &wrong[0]);
    let path = wrappers(dir.path(), UNSEAL_TOOLS);
    let out = run(
        &cronjob_container("vault-auto-unseal"),
        &path,
        &[
            ("VAULT_ADDR", vault.url()),
            ("UNSEAL_KEY_FILE", key.display().to_string()),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("Vault refused share 1"),
        "{}",
        text(&out)
    );
    assert_eq!(seal_status(&vault).await["sealed"], true);
    assert_never_shown(dir.path(), &out, &[&wrong[0]]);

    // Junk that is neither hex nor base64 is not even sent.
    let secretish = "not-a-key\"},{\"reset\":true";
    let key = key_file(dir.path(), secretish);
    std::fs::remove_file(dir.path().join("argv.log")).unwrap();
    let out = run(
        &cronjob_container("vault-auto-unseal"),
        &path,
        &[
            ("VAULT_ADDR", vault.url()),
            ("UNSEAL_KEY_FILE", key.display().to_string()),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("refusing to send it"), "{}", text(&out));
    let argv = std::fs::read_to_string(dir.path().join("argv.log")).unwrap();
    assert!(!argv.contains("/v1/sys/unseal"), "{argv}");
    assert!(!text(&out).contains(secretish));
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_unseal_script_reports_an_unreachable_vault() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "abcd\n");
    let path = wrappers(dir.path(), UNSEAL_TOOLS);
    let out = run(
        &cronjob_container("vault-auto-unseal"),
        &path,
        &[
            ("VAULT_ADDR", "http://127.0.0.1:9".to_string()),
            ("UNSEAL_KEY_FILE", key.display().to_string()),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("cannot reach Vault"), "{}", text(&out));
}

/// A `kubectl` stand-in for eso-recovery: answers from files in `dir`, logs like the wrappers.
fn fake_kubectl(dir: &Path, store_ready: &str, deployment_state: &str) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("argv.log");
    let script = format!(
        r#"#!/bin/sh
printf '%s\n' "kubectl $*" >> '{log}'
case "$*" in
  "get clustersecretstore k8s-secrets -o "*) printf '%s' '{store_ready}' ;;
  *" get deployment "*" -o "*) printf '%s' '{deployment_state}' ;;
  *" rollout restart "*) for t in "$@"; do case "$t" in deployment/*) echo "$t restarted";; esac; done ;;
  *) echo "fake kubectl: unexpected $*" >&2; exit 1 ;;
esac
"#,
        log = log.display()
    );
    let path = bin.join("kubectl");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

async fn recovery_run(
    vault_url: &str,
    store_ready: &str,
    deployment_state: &str,
) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = wrappers(dir.path(), RECOVERY_TOOLS);
    fake_kubectl(dir.path(), store_ready, deployment_state);
    let out = run(
        &cronjob_container("eso-recovery"),
        &path,
        &[("VAULT_ADDR", vault_url.to_string())],
    )
    .await;
    let argv = std::fs::read_to_string(dir.path().join("argv.log")).unwrap_or_default();
    (out, argv)
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_eso_recovery_script_restarts_eso_only_when_vault_is_up_and_store_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, keys) = sealed_vault(dir.path(), 1, 1).await;

    // Sealed Vault: nothing, not even a kubectl call.
    let (out, argv) = recovery_run(&vault.url(), "False", "1/1/1/1/1/1").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!argv.contains("kubectl"), "{argv}");

    // Unseal it (the body from a file, as the test's own client).
    let body = dir.path().join("body.json");
    std::fs::write(&body, format!("{{\"key\":\"{}\"}}", keys[0])).unwrap();
    let status = tokio::process::Command::new("curl")
        .args(["-sS", "-X", "PUT", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(format!("{}/v1/sys/unseal", vault.url()))
        .output()
        .await
        .unwrap();
    assert!(status.status.success());
    assert_eq!(seal_status(&vault).await["sealed"], false);

    // Store Ready: nothing to restart.
    let (out, argv) = recovery_run(&vault.url(), "True", "1/1/1/1/1/1").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("is Ready"), "{}", text(&out));
    assert!(!argv.contains("rollout"), "{argv}");

    // Store not Ready, Deployments settled: restart all three.
    let (out, argv) = recovery_run(&vault.url(), "False", "2/2/1/1/1/1").await;
    assert!(out.status.success(), "{}", text(&out));
    let restart = argv
        .lines()
        .find(|l| l.contains("rollout restart"))
        .unwrap_or_else(|| panic!("{argv}"));
    assert_eq!(
        restart,
        "kubectl -n security rollout restart deployment/external-secrets deployment/external-secrets-webhook deployment/external-secrets-cert-controller"
    );

    // Store with no status yet (empty jsonpath answer): also restart.
    let (out, argv) = recovery_run(&vault.url(), "", "1/1/1/1/1/1").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(argv.contains("rollout restart"), "{argv}");

    // A restart still rolling out (new generation not observed / old pod left): wait.
    for state in ["3/2/1/1/1/1", "2/2/1/1/1/2", "2/2/1/1/0/1", "2/2/1//1/1"] {
        let (out, argv) = recovery_run(&vault.url(), "False", state).await;
        assert!(out.status.success(), "{state}: {}", text(&out));
        assert!(
            text(&out).contains("still rolling out"),
            "{state}: {}",
            text(&out)
        );
        assert!(!argv.contains("rollout restart"), "{state}: {argv}");
    }

    // Unreachable Vault: nothing.
    let (out, argv) = recovery_run("http://127.0.0.1:9", "False", "1/1/1/1/1/1").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!argv.contains("kubectl"), "{argv}");
}
