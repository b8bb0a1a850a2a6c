//! OpenBao's Kubernetes auth method for real on a lab node (node mode: lab-k3s as the lab
//! server's k3s, `LAB_NODE=1`, in the server's network namespace): vault-0 is the real `bao`
//! with the kubelet's `kube-api-access` files at /var/run/secrets/kubernetes.io/
//! serviceaccount and `kubernetes.default.svc` → 10.43.0.1:443 → lab-k3s's API. Configured
//! with only `kubernetes_host` (in-cluster config: CA and reviewer JWT from those files), a
//! role bound to one ServiceAccount lets that SA's TokenRequest token log in, refuses
//! another SA, and refuses everyone once the chart's ClusterRoleBinding
//! `vault-server-binding` (→ `system:auth-delegator`) is gone, as TokenReview then answers
//! 403 to Vault. A vault-0 whose ServiceAccount was deleted cannot be restarted (Pending).

use std::time::{Duration, Instant};

use rebox_lab::server::{LabOptions, LabServer};
use serde_json::{json, Value};

const KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

const CHART: &str = r#"apiVersion: helm.cattle.io/v1
kind: HelmChart
metadata:
  name: vault
  namespace: kube-system
spec:
  chart: vault
  repo: https://openbao.github.io/openbao-helm
  targetNamespace: security
  valuesContent: |-
    server:
      standalone:
        enabled: true
      dataStorage:
        enabled: false
"#;

fn kubectl(lab: &LabServer, args: &str) -> anyhow::Result<String> {
    lab.run_as_root_ok(&format!("KUBECONFIG={KUBECONFIG} kubectl {args}"))
}

/// Runs `cond` (a shell condition inside the lab) until it succeeds, failing at `secs`.
fn wait_for(lab: &LabServer, what: &str, cond: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let out = lab.run_as_root(cond).expect("nsenter runs");
        if out.status.success() {
            return;
        }
        if Instant::now() > deadline {
            let log = lab
                .run_as_root("tail -n 40 /var/log/lab-k3s.log; tail -n 30 /var/lib/rancher/k3s/lab/vault/security/vault-0/bao.log")
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!(
                "timed out ({secs}s) waiting for {what}: {}\n--- logs\n{log}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TokenRequest for ServiceAccount `apps/<sa>` (what `kubectl create token` does; sent as
/// JSON because lab-k3s cannot decode kubectl's protobuf TokenRequest body yet).
fn token(lab: &LabServer, sa: &str) -> String {
    let out = lab
        .run_as_root_ok(&format!(
            "echo '{{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenRequest\",\"spec\":{{}}}}' | KUBECONFIG={KUBECONFIG} kubectl create --raw /api/v1/namespaces/apps/serviceaccounts/{sa}/token -f -"
        ))
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["status"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

/// One call to Vault's API from inside the lab node: (HTTP code, JSON body).
fn bao(
    lab: &LabServer,
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut cmd =
        format!("curl -sS --max-time 10 -X {method} -w '\\n%{{http_code}}' http://{addr}{path}");
    if let Some(t) = token {
        cmd.push_str(&format!(" -H 'X-Vault-Token: {t}'"));
    }
    if let Some(b) = body {
        cmd.push_str(&format!(" --data-binary @- <<'JSON'\n{b}\nJSON"));
    }
    let out = lab.run_as_root_ok(&cmd).expect("curl runs");
    let (text, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    let v = serde_json::from_str(text).unwrap_or(Value::String(text.to_string()));
    (code.parse().unwrap_or(0), v)
}

#[test]
fn vault_kubernetes_auth_in_cluster_config_logs_in_bound_sa_only_and_needs_auth_delegator() {
    let lab = LabServer::start(LabOptions::default()).expect("lab server starts");
    let bin = env!("CARGO_BIN_EXE_lab-k3s");
    let bao_env = std::env::var("LAB_BAO")
        .map(|b| format!("LAB_BAO={b} "))
        .unwrap_or_default();
    let mut k3s = lab
        .spawn_as_root(&format!(
        "mkdir -p /var/lib/rancher/k3s /etc/rancher/k3s; LAB_NODE=1 {bao_env}exec {bin} server --data-dir /var/lib/rancher/k3s --listen 127.0.0.1:6443 --write-kubeconfig {KUBECONFIG} --disable traefik >/var/log/lab-k3s.log 2>&1"
    ))
    .expect("lab-k3s starts");
    wait_for(
        &lab,
        "the API",
        &format!("KUBECONFIG={KUBECONFIG} kubectl get --raw /readyz"),
        30,
    );
    kubectl(&lab, "create namespace security").unwrap();
    lab.run_as_root_ok(&format!(
        "KUBECONFIG={KUBECONFIG} kubectl apply -f - <<'YAML'\n{CHART}\nYAML"
    ))
    .unwrap();
    wait_for(&lab, "vault-0 Running", &format!("KUBECONFIG={KUBECONFIG} kubectl -n security get pod vault-0 -o jsonpath='{{.status.phase}}' | grep -qx Running"), 60);
    // The chart's objects for the auth delegation (vault-helm server.authDelegator.enabled).
    let crb: Value = serde_json::from_str(
        &kubectl(&lab, "get clusterrolebinding vault-server-binding -o json").unwrap(),
    )
    .unwrap();
    assert_eq!(crb["roleRef"]["name"], "system:auth-delegator", "{crb}");
    assert_eq!(
        crb["subjects"][0],
        json!({"kind": "ServiceAccount", "name": "vault", "namespace": "security"})
    );
    assert_eq!(
        kubectl(
            &lab,
            "-n security get pod vault-0 -o jsonpath={.spec.serviceAccountName}"
        )
        .unwrap()
        .trim(),
        "vault"
    );

    let ip = kubectl(
        &lab,
        "-n security get svc vault -o jsonpath={.spec.clusterIP}",
    )
    .unwrap();
    let addr = format!("{}:8200", ip.trim());
    wait_for(
        &lab,
        "bao answering",
        &format!("curl -sf --max-time 2 http://{addr}/v1/sys/seal-status"),
        30,
    );
    // The pod's view: the kubelet's files and cluster DNS, inside its mount namespace only.
    let pid = lab
        .run_as_root_ok("cat /var/lib/rancher/k3s/lab/vault/security/vault-0/pid")
        .unwrap();
    let pid = pid.trim();
    let ns_view = lab
        .run_as_root_ok(&format!("nsenter -t {pid} -m -- sh -c 'cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; stat -c %a /var/run/secrets/kubernetes.io/serviceaccount/token; getent hosts kubernetes.default.svc'"))
        .unwrap();
    assert!(
        ns_view.starts_with("security\n600\n10.43.0.1 "),
        "{ns_view}"
    );
    assert!(
        !lab.run_as_root("test -e /var/run/secrets/kubernetes.io/serviceaccount/token")
            .unwrap()
            .status
            .success(),
        "the pod's mounts leaked onto the node"
    );

    let (code, init) = bao(
        &lab,
        &addr,
        "PUT",
        "/v1/sys/init",
        Some(&json!({"secret_shares": 1, "secret_threshold": 1})),
        None,
    );
    assert_eq!(code, 200, "{init}");
    let key = init["keys"][0].as_str().unwrap().to_string();
    let root = init["root_token"].as_str().unwrap().to_string();
    let (code, st) = bao(
        &lab,
        &addr,
        "PUT",
        "/v1/sys/unseal",
        Some(&json!({"key": key})),
        None,
    );
    assert_eq!((code, &st["sealed"]), (200, &json!(false)), "{st}");
    wait_for(
        &lab,
        "bao active",
        &format!("curl -sf --max-time 2 -o /dev/null http://{addr}/v1/sys/health"),
        30,
    );

    let t = Some(root.as_str());
    let (code, v) = bao(
        &lab,
        &addr,
        "POST",
        "/v1/sys/auth/kubernetes",
        Some(&json!({"type": "kubernetes"})),
        t,
    );
    assert_eq!(code, 204, "{v}");
    let (code, v) = bao(
        &lab,
        &addr,
        "POST",
        "/v1/auth/kubernetes/config",
        Some(&json!({"kubernetes_host": "https://kubernetes.default.svc"})),
        t,
    );
    assert_eq!(code, 204, "{v}");
    // In-cluster config: OpenBao 2.7.2 stores neither CA nor reviewer JWT; it reads both
    // from the pod's files when it talks to the API (builtin/credential/kubernetes/
    // backend.go `loadConfig`: `disable_local_ca_jwt` false → `localCACertReader`,
    // `localSATokenReader`). The logins below only work if those files are right.
    let (code, cfg) = bao(&lab, &addr, "GET", "/v1/auth/kubernetes/config", None, t);
    assert_eq!(code, 200, "{cfg}");
    assert_eq!(cfg["data"]["kubernetes_ca_cert"], "", "{cfg}");
    assert_eq!(cfg["data"]["token_reviewer_jwt_set"], false, "{cfg}");
    assert_eq!(cfg["data"]["disable_local_ca_jwt"], false, "{cfg}");

    kubectl(&lab, "create namespace apps").unwrap();
    kubectl(&lab, "-n apps create serviceaccount app").unwrap();
    kubectl(&lab, "-n apps create serviceaccount other").unwrap();
    let (code, v) = bao(
        &lab,
        &addr,
        "POST",
        "/v1/auth/kubernetes/role/app",
        Some(&json!({
        "bound_service_account_names": ["app"], "bound_service_account_namespaces": ["apps"],
        "token_policies": ["default"], "token_ttl": "1h"})),
        t,
    );
    assert_eq!(code, 204, "{v}");

    let app_jwt = token(&lab, "app");
    let login = |jwt: &str| {
        bao(
            &lab,
            &addr,
            "POST",
            "/v1/auth/kubernetes/login",
            Some(&json!({"role": "app", "jwt": jwt.trim()})),
            None,
        )
    };
    let (code, v) = login(&app_jwt);
    assert_eq!(code, 200, "the bound SA logs in: {v}");
    assert_eq!(v["auth"]["metadata"]["service_account_name"], "app", "{v}");
    assert!(
        v["auth"]["client_token"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{v}"
    );

    let other_jwt = token(&lab, "other");
    let (code, v) = login(&other_jwt);
    assert_eq!(code, 403, "an SA not in the role is refused: {v}");

    // A tampered token (claims changed, signature kept) is refused by the TokenReview.
    let parts: Vec<&str> = app_jwt.trim().split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 3600);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );
    let (code, v) = login(&forged);
    assert_eq!(code, 403, "a tampered token is refused: {v}");

    // Without the auth-delegator binding Vault's TokenReview is forbidden: no login at all.
    kubectl(&lab, "delete clusterrolebinding vault-server-binding").unwrap();
    let (code, v) = login(&app_jwt);
    assert_ne!(code, 200, "login without auth-delegator must fail: {v}");
    assert!(
        v.to_string().contains("permission denied") || v.to_string().contains("forbidden"),
        "{v}"
    );

    // The kubelet cannot restart vault-0 once its ServiceAccount is gone.
    kubectl(&lab, "-n security delete serviceaccount vault").unwrap();
    lab.run_as_root_ok(&format!("kill -KILL {pid}")).unwrap();
    wait_for(&lab, "vault-0 Pending for want of a token", &format!("KUBECONFIG={KUBECONFIG} kubectl -n security get pod vault-0 -o jsonpath='{{.status.phase}}' | grep -qx Pending"), 30);
    let pod: Value =
        serde_json::from_str(&kubectl(&lab, "-n security get pod vault-0 -o json").unwrap())
            .unwrap();
    assert!(
        pod["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("failed to fetch token: serviceaccounts \"vault\" not found"),
        "{pod}"
    );
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "ContainerCreating",
        "{pod}"
    );
    let _ = k3s.kill();
    let _ = k3s.wait();
}
