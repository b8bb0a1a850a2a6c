//! Every manifest rendered with the default config, applied for real to the lab's Kubernetes
//! API stand-in (lab-k3s, in this process) with real `kubectl`: server-side apply with strict
//! field validation, after the upstream CRDs from ../shared/crds. A misspelled field is
//! refused by the same server, so the check can fail.

use crate::manifests_support;
use std::path::Path;
use std::process::Output;

use rebox::config::Config;
use rebox::manifests::{self, RenderInputs};
use rebox_lab::k3s::{Options, Running};

async fn start_lab_k3s(dir: &Path) -> Running {
    Running::start(Options {
        data_dir: dir.join("k3s"),
        listen: "127.0.0.1:0".parse().unwrap(),
        kubeconfig: dir.join("k3s.yaml"),
        kubeconfig_mode: 0o600,
        tls_san: vec![],
        node_name: "homelab".into(),
    })
    .await
    .unwrap()
}

async fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl is installed");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).await.unwrap();
    }
    drop(pipe);
    child.wait_with_output().await.unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const APPLY: &[&str] = &[
    "apply",
    "--server-side",
    "--field-manager=rebox",
    "--validate=strict",
    "-f",
    "-",
];

#[tokio::test(flavor = "multi_thread")]
async fn manifests_apply_strictly_to_the_lab_api_server() {
    let Some(crds) = manifests_support::crds_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let k3s = start_lab_k3s(dir.path()).await;
    let kc = k3s.kubeconfig.clone();

    let mut files: Vec<_> = std::fs::read_dir(&crds)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // k3s registers its own helm.cattle.io CRDs at start (manager "k3s"); the upstream
    // files take those fields over, as an operator upgrading a CRD would.
    let apply_crd: Vec<&str> = APPLY.iter().copied().chain(["--force-conflicts"]).collect();
    for crd in files {
        let yaml = std::fs::read_to_string(&crd).unwrap();
        let out = kubectl(&kc, &apply_crd, Some(&yaml)).await;
        assert!(out.status.success(), "{}: {}", crd.display(), text(&out));
    }

    let rendered = manifests::render_all(&Config::default(), &RenderInputs::online()).unwrap();
    for m in &rendered {
        // ESO's webhook refuses its stores until it serves (as kube-apiserver does, a while
        // after the chart's install); rebox's apply waits for it the same way.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let out = loop {
            let out = kubectl(&kc, APPLY, Some(&m.yaml)).await;
            if out.status.success()
                || !text(&out).contains("failed calling webhook")
                || std::time::Instant::now() > deadline
            {
                break out;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        };
        assert!(out.status.success(), "{}: {}", m.name, text(&out));
        for o in &m.objects {
            let kind = o["kind"].as_str().unwrap();
            let group = o["apiVersion"]
                .as_str()
                .unwrap()
                .rsplit_once('/')
                .map(|(g, _)| format!(".{g}"))
                .unwrap_or_default();
            let name = o["metadata"]["name"].as_str().unwrap();
            let mut args = vec!["get".to_string(), format!("{kind}{group}/{name}")];
            if let Some(ns) = o["metadata"]["namespace"].as_str() {
                args.extend(["-n".to_string(), ns.to_string()]);
            }
            args.extend(["-o".into(), "name".into()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = kubectl(&kc, &args, None).await;
            assert!(
                out.status.success(),
                "{} {kind}/{name}: {}",
                m.name,
                text(&out)
            );
        }
    }

    // Re-applying the same render changes nothing and is accepted (idempotent apply).
    let all: String = rendered
        .iter()
        .map(|m| format!("---\n{}", m.yaml))
        .collect();
    let out = kubectl(&kc, APPLY, Some(&all)).await;
    assert!(out.status.success(), "{}", text(&out));

    // The server does refuse a misspelled field in a CR and in a core kind.
    let chart = rendered
        .iter()
        .find(|m| m.name == "addons/longhorn")
        .unwrap()
        .yaml
        .replace("  targetNamespace:", "  targetNamespce:");
    let out = kubectl(&kc, APPLY, Some(&chart)).await;
    assert!(!out.status.success(), "misspelled HelmChart field accepted");
    assert!(text(&out).contains("targetNamespce"), "{}", text(&out));
    let cronjob = rendered
        .iter()
        .find(|m| m.name == "cronjobs/vault-auto-unseal")
        .unwrap()
        .yaml
        .replace("  concurrencyPolicy:", "  concurrencyPolicyy:");
    let out = kubectl(&kc, APPLY, Some(&cronjob)).await;
    assert!(!out.status.success(), "misspelled CronJob field accepted");
    assert!(text(&out).contains("concurrencyPolicyy"), "{}", text(&out));
}
