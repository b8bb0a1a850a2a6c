//! The rendered bootstrap, checked strictly: every manifest rendered with the default config
//! parses into Kubernetes objects; core kinds survive k8s-openapi's typed structs with no field
//! lost; custom resources validate against the real upstream CRD schemas (../shared/crds);
//! and the validators do catch a misspelled field. Plus the renderer's promises: determinism,
//! config flowing into every name, chartContent from a checked bundle, secrets never rendered.

use crate::manifests_support;
use std::collections::BTreeSet;

use rebox::config::{Config, RepoAuth};
use rebox::manifests::{self, Group, Manifest, RenderInputs};
use serde_json::Value;
use zeroize::Zeroizing;

fn render(config: &Config) -> Vec<Manifest> {
    manifests::render_all(config, &RenderInputs::online()).unwrap()
}

fn all_objects(manifests: &[Manifest]) -> Vec<&Value> {
    manifests.iter().flat_map(|m| m.objects.iter()).collect()
}

fn find<'a>(manifests: &'a [Manifest], kind: &str, name: &str) -> &'a Value {
    all_objects(manifests)
        .into_iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

#[test]
fn manifests_default_render_is_complete_and_well_formed() {
    let rendered = render(&Config::default());
    let names: Vec<&str> = rendered.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "addons/namespaces",
            "addons/longhorn",
            "addons/vault-storage",
            "addons/vault",
            "addons/external-secrets",
            "addons/cluster-secret-store",
            "addons/argo-cd",
            "gitops/repository",
            "gitops/root-app",
            "cronjobs/vault-auto-unseal",
            "cronjobs/eso-recovery",
        ]
    );
    // Groups come in apply order.
    let groups: Vec<Group> = rendered.iter().map(|m| m.group).collect();
    let mut sorted = groups.clone();
    sorted.sort();
    assert_eq!(groups, sorted);
    for m in &rendered {
        assert!(!m.objects.is_empty(), "{} has no objects", m.name);
        // The YAML text parses back to exactly the objects.
        assert_eq!(
            manifests::parse_objects(&m.yaml).unwrap(),
            m.objects,
            "{}",
            m.name
        );
        for o in &m.objects {
            for field in ["apiVersion", "kind"] {
                assert!(
                    o[field].as_str().is_some_and(|s| !s.is_empty()),
                    "{}: {o}",
                    m.name
                );
            }
            assert!(o["metadata"]["name"].as_str().is_some(), "{}: {o}", m.name);
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/managed-by"], "rebox",
                "{}: {}",
                m.name, o["metadata"]["name"]
            );
        }
    }
    // The homelab's names.
    for (kind, name) in [
        ("HelmChart", "longhorn"),
        ("HelmChart", "vault"),
        ("HelmChart", "external-secrets"),
        ("HelmChart", "argo-cd"),
        ("PersistentVolumeClaim", "vault-data-lh"),
        ("ClusterSecretStore", "k8s-secrets"),
        ("CronJob", "vault-auto-unseal"),
        ("CronJob", "eso-recovery"),
        ("Application", "root"),
        ("Secret", "gitops-repo"),
    ] {
        find(&rendered, kind, name);
    }
    let namespaces: BTreeSet<&str> = all_objects(&rendered)
        .iter()
        .filter(|o| o["kind"] == "Namespace")
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        namespaces,
        BTreeSet::from(["argocd", "longhorn-system", "security"])
    );
}

#[test]
fn manifests_core_kinds_deserialize_strictly_into_k8s_openapi() {
    let rendered = render(&Config::default());
    let mut checked = 0;
    for o in all_objects(&rendered) {
        if o["apiVersion"].as_str().unwrap().contains('.')
            && !o["apiVersion"]
                .as_str()
                .unwrap()
                .starts_with("rbac.authorization.k8s.io/")
        {
            continue; // custom resource: checked against its CRD
        }
        manifests_support::check_core(o)
            .unwrap_or_else(|e| panic!("{} {}: {e}", o["kind"], o["metadata"]["name"]));
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} core objects checked");
}

#[test]
fn manifests_custom_resources_validate_against_upstream_crds() {
    let Some(dir) = manifests_support::crds_dir() else {
        return;
    };
    let schemas = manifests_support::CrdSchemas::load(&dir);
    let rendered = render(&Config::default());
    let mut kinds = BTreeSet::new();
    for o in all_objects(&rendered) {
        if manifests_support::is_core(o) {
            continue;
        }
        assert!(
            schemas.covers(o),
            "{} {} has no served CRD version in {}",
            o["apiVersion"],
            o["kind"],
            dir.display()
        );
        schemas
            .validate(o)
            .unwrap_or_else(|e| panic!("{} {}: {e}", o["kind"], o["metadata"]["name"]));
        kinds.insert(o["kind"].as_str().unwrap().to_string());
    }
    assert_eq!(
        kinds,
        BTreeSet::from([
            "Application".into(),
            "ClusterSecretStore".into(),
            "HelmChart".into()
        ])
    );
}

#[test]
fn manifests_validators_catch_a_misspelled_field() {
    let rendered = render(&Config::default());
    // Core kind, deep in the pod template.
    let mut cronjob = find(&rendered, "CronJob", "vault-auto-unseal").clone();
    cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        ["imagePullPolicyy"] = "Always".into();
    let err = manifests_support::check_core(&cronjob).unwrap_err();
    assert!(err.contains("imagePullPolicyy"), "{err}");
    let mut cronjob = find(&rendered, "CronJob", "eso-recovery").clone();
    cronjob["spec"]["concurrencyPolicyy"] = "Forbid".into();
    assert!(manifests_support::check_core(&cronjob).is_err());
    let mut ns = find(&rendered, "Namespace", "security").clone();
    ns["metadata"]["lables"] = serde_json::json!({});
    assert!(manifests_support::check_core(&ns).is_err());

    let Some(dir) = manifests_support::crds_dir() else {
        return;
    };
    let schemas = manifests_support::CrdSchemas::load(&dir);
    let mut chart = find(&rendered, "HelmChart", "longhorn").clone();
    chart["spec"]["valuesContnet"] = "x: 1".into();
    let err = schemas.validate(&chart).unwrap_err();
    assert!(err.contains("valuesContnet"), "{err}");
    let mut store = find(&rendered, "ClusterSecretStore", "k8s-secrets").clone();
    store["spec"]["provider"]["vault"]["auth"]["kubernetes"]["rolee"] = "x".into();
    let err = schemas.validate(&store).unwrap_err();
    assert!(err.contains("rolee"), "{err}");
    let mut app = find(&rendered, "Application", "root").clone();
    app["spec"]["syncPolicy"]["automated"]["selfheal"] = true.into();
    assert!(schemas.validate(&app).is_err());
    // A wrong type and an enum outside its values are caught too.
    let mut store = find(&rendered, "ClusterSecretStore", "k8s-secrets").clone();
    store["spec"]["provider"]["vault"]["version"] = "v3".into();
    assert!(schemas.validate(&store).is_err());
    let mut app = find(&rendered, "Application", "root").clone();
    app["metadata"]["finalizer"] = serde_json::json!([]);
    assert!(schemas.validate(&app).is_err(), "unknown metadata field");
}

#[test]
fn manifests_render_is_deterministic() {
    let c = Config::default();
    let a = serde_json::to_string(&render(&c)).unwrap();
    let b = serde_json::to_string(&render(&c)).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        manifests::render_k3s_config(&c).unwrap(),
        manifests::render_k3s_config(&c).unwrap()
    );
}

#[test]
fn manifests_k3s_unit_and_config() {
    let mut c = Config::default();
    let unit = manifests::render_k3s_unit(&c).unwrap();
    for line in [
        "Type=notify",
        "KillMode=process",
        "Delegate=yes",
        "LimitNOFILE=1048576",
        "LimitNPROC=infinity",
        "TasksMax=infinity",
        "TimeoutStartSec=0",
        "Restart=always",
        "ExecStart=/usr/local/bin/k3s server",
        "WantedBy=multi-user.target",
        "After=network-online.target",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "unit lacks {line}:\n{unit}"
        );
    }
    let config = manifests::render_k3s_config(&c).unwrap();
    let parsed: Value = serde_saphyr::from_str(&config).unwrap();
    assert_eq!(parsed, serde_json::json!({"write-kubeconfig-mode": "0600"}));

    c.server.host = "homelab.lan".into();
    c.k3s.node_name = "homelab".into();
    c.k3s.tls_san = vec!["10.0.0.5".into(), "homelab.lan".into()];
    c.k3s.disable = vec!["traefik".into(), "servicelb".into()];
    let parsed: Value = serde_saphyr::from_str(&manifests::render_k3s_config(&c).unwrap()).unwrap();
    assert_eq!(
        parsed,
        serde_json::json!({
            "write-kubeconfig-mode": "0600",
            "node-name": "homelab",
            "tls-san": ["10.0.0.5", "homelab.lan"],
            "disable": ["traefik", "servicelb"],
        })
    );
}

#[test]
fn manifests_follow_a_non_default_config() {
    let mut c = Config::default();
    c.vault.namespace = "vault-ns".into();
    c.vault.pvc = "vault-storage".into();
    c.vault.unseal_secret = "unseal".into();
    c.vault.unseal_secret_key = "shares".into();
    c.vault.port = 8300;
    c.eso.namespace = "eso".into();
    c.eso.store = "vault-backend".into();
    c.eso.deployments = vec!["a".into(), "b".into()];
    c.longhorn.replica_count = 2;
    c.longhorn.backup_credential_secret = "nas-s3".into();
    c.nas.backup_target = "s3://backups@us-east-1/".into();
    c.argocd.repo_url = "https://git.example/lab.git".into();
    c.argocd.revision = "main".into();
    c.cronjobs.unseal_image = "registry.lan/curl:1".into();
    let rendered = render(&c);

    let vault = find(&rendered, "HelmChart", "vault");
    assert_eq!(vault["spec"]["targetNamespace"], "vault-ns");
    let values: Value =
        serde_saphyr::from_str(vault["spec"]["valuesContent"].as_str().unwrap()).unwrap();
    assert_eq!(values["server"]["dataStorage"]["enabled"], false);
    assert_eq!(
        values["server"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "vault-storage"
    );
    assert_eq!(
        values["server"]["volumeMounts"][0]["mountPath"],
        "/vault/data"
    );

    let longhorn = find(&rendered, "HelmChart", "longhorn");
    let values: Value =
        serde_saphyr::from_str(longhorn["spec"]["valuesContent"].as_str().unwrap()).unwrap();
    assert_eq!(
        values["defaultBackupStore"]["backupTarget"],
        "s3://backups@us-east-1/"
    );
    assert_eq!(
        values["defaultBackupStore"]["backupTargetCredentialSecret"],
        "nas-s3"
    );
    assert_eq!(values["persistence"]["defaultClassReplicaCount"], 2);
    assert_eq!(values["defaultSettings"]["defaultReplicaCount"], 2);

    let pvc = find(&rendered, "PersistentVolumeClaim", "vault-storage");
    assert_eq!(pvc["metadata"]["namespace"], "vault-ns");

    let store = find(&rendered, "ClusterSecretStore", "vault-backend");
    assert_eq!(
        store["spec"]["provider"]["vault"]["server"],
        "http://vault.vault-ns.svc:8300"
    );

    let unseal = find(&rendered, "CronJob", "vault-auto-unseal");
    assert_eq!(unseal["metadata"]["namespace"], "vault-ns");
    let pod = &unseal["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "unseal");
    assert_eq!(pod["volumes"][0]["secret"]["items"][0]["key"], "shares");
    assert_eq!(pod["containers"][0]["image"], "registry.lan/curl:1");

    let role = all_objects(&rendered)
        .into_iter()
        .find(|o| o["kind"] == "Role")
        .unwrap();
    assert_eq!(role["metadata"]["namespace"], "eso");
    assert_eq!(
        role["rules"][0]["resourceNames"],
        serde_json::json!(["a", "b"])
    );
    let recovery = find(&rendered, "CronJob", "eso-recovery");
    let env = &recovery["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(env
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "DEPLOYMENTS" && e["value"] == "a b"));

    let app = find(&rendered, "Application", "root");
    assert_eq!(
        app["spec"]["source"]["repoURL"],
        "https://git.example/lab.git"
    );
    assert_eq!(app["spec"]["source"]["targetRevision"], "main");
    assert!(rendered.iter().all(|m| m.missing_config.is_empty()));
}

#[test]
fn manifests_config_strings_cannot_break_the_yaml() {
    let mut c = Config::default();
    let evil = "https://x/\"repo\"\n---\nkind: Secret\n  # {{ not a template }} * &a !!str";
    c.argocd.repo_url = evil.into();
    c.cronjobs.unseal_schedule = "*/5 * * * *".into();
    let rendered = render(&c);
    assert_eq!(
        find(&rendered, "Application", "root")["spec"]["source"]["repoURL"],
        evil
    );
    assert_eq!(
        find(&rendered, "Secret", "gitops-repo")["stringData"]["url"],
        evil
    );
    assert_eq!(
        find(&rendered, "CronJob", "vault-auto-unseal")["spec"]["schedule"],
        "*/5 * * * *"
    );
    assert_eq!(
        all_objects(&rendered).len(),
        all_objects(&render(&Config::default())).len()
    );
}

#[test]
fn manifests_unset_repo_url_blocks_gitops_only() {
    let rendered = render(&Config::default());
    for m in &rendered {
        if m.group == Group::GitOps {
            assert_eq!(m.missing_config, ["argocd.repo_url"], "{}", m.name);
        } else {
            assert!(
                m.missing_config.is_empty(),
                "{}: {:?}",
                m.name,
                m.missing_config
            );
        }
    }
    let mut c = Config::default();
    c.nas.backup_target = String::new();
    let rendered = render(&c);
    assert_eq!(rendered[1].name, "addons/longhorn");
    assert_eq!(rendered[1].missing_config, ["nas.backup_target"]);
}

#[test]
fn manifests_repository_credentials_are_filled_at_apply_time_only() {
    let secret_value = "ghp_NOT_IN_ANY_RENDER_0123456789";
    let mut c = Config::default();
    c.argocd.repo_url = "https://git.example/lab.git".into();

    // Public repository: nothing to fill.
    let rendered = render(&c);
    let repo = rendered
        .iter()
        .find(|m| m.name == "gitops/repository")
        .unwrap();
    assert!(repo.secret_inputs.is_empty());
    let objects = repo.objects_with_secrets(&|_| None).unwrap();
    assert_eq!(
        objects[0]["data"]["url"],
        "aHR0cHM6Ly9naXQuZXhhbXBsZS9sYWIuZ2l0"
    );
    assert!(objects[0].get("stringData").is_none());

    // HTTPS: the password comes from the named extra secret.
    c.argocd.repo_auth = RepoAuth::Https;
    c.argocd.repo_username = "git".into();
    let rendered = render(&c);
    let repo = rendered
        .iter()
        .find(|m| m.name == "gitops/repository")
        .unwrap();
    assert_eq!(repo.secret_inputs.len(), 1);
    let input = &repo.secret_inputs[0];
    assert_eq!(
        (
            input.namespace.as_str(),
            input.secret.as_str(),
            input.key.as_str(),
            input.source.as_str()
        ),
        (
            "argocd",
            "gitops-repo",
            "password",
            "argocd-repo-credential"
        )
    );
    assert!(repo.objects[0]["stringData"].get("password").is_none());
    let err = repo
        .objects_with_secrets(&|_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("argocd-repo-credential"), "{err}");
    let filled = repo
        .objects_with_secrets(&|i| {
            (i.source == "argocd-repo-credential").then(|| Zeroizing::new(secret_value.into()))
        })
        .unwrap();
    let data = &filled[0]["data"];
    use base64::Engine;
    let decode = |v: &Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(decode(&data["password"]), secret_value);
    assert_eq!(decode(&data["username"]), "git");
    assert_eq!(decode(&data["type"]), "git");
    manifests_support::check_core(&filled[0]).unwrap();
    // The rendered text and objects never hold it.
    assert!(!serde_json::to_string(&rendered)
        .unwrap()
        .contains(secret_value));

    // SSH: the private key.
    c.argocd.repo_auth = RepoAuth::Ssh;
    let rendered = render(&c);
    let repo = rendered
        .iter()
        .find(|m| m.name == "gitops/repository")
        .unwrap();
    assert_eq!(repo.secret_inputs[0].key, "sshPrivateKey");
    assert!(repo.objects[0]["stringData"].get("username").is_none());
}

#[test]
fn manifests_chart_content_from_a_checked_bundle() {
    use sha2::{Digest, Sha256};
    let artifacts = manifests::Artifacts::embedded().unwrap();
    let bundle = tempfile::tempdir().unwrap();

    // No charts/ directory: charts come from their repositories.
    let inputs = RenderInputs::from_bundle(bundle.path(), &artifacts).unwrap();
    assert_eq!(inputs, RenderInputs::online());

    std::fs::create_dir(bundle.path().join("charts")).unwrap();
    let mut sums = String::new();
    for (key, chart) in &artifacts.charts {
        let bytes = format!("tarball of {key}").into_bytes();
        sums.push_str(&format!(
            "{}  charts/{}\n",
            hex::encode(Sha256::digest(&bytes)),
            chart.tarball_name()
        ));
        std::fs::write(
            bundle.path().join("charts").join(chart.tarball_name()),
            bytes,
        )
        .unwrap();
    }
    // Charts without a checksum listing are refused.
    let err = RenderInputs::from_bundle(bundle.path(), &artifacts).unwrap_err();
    assert!(format!("{err:#}").contains("SHA256SUMS"), "{err:#}");
    std::fs::write(bundle.path().join("SHA256SUMS"), &sums).unwrap();
    let inputs = RenderInputs::from_bundle(bundle.path(), &artifacts).unwrap();
    assert_eq!(inputs.chart_tarballs.len(), 4);

    let rendered = manifests::render_all(&Config::default(), &inputs).unwrap();
    let chart = find(&rendered, "HelmChart", "longhorn");
    use base64::Engine;
    assert_eq!(
        chart["spec"]["chartContent"],
        base64::engine::general_purpose::STANDARD.encode("tarball of longhorn")
    );
    assert!(chart["spec"].get("repo").is_none(), "air-gapped: no repo");
    if let Some(dir) = manifests_support::crds_dir() {
        let schemas = manifests_support::CrdSchemas::load(&dir);
        schemas.validate(chart).unwrap();
    }

    // A tampered tarball is refused.
    let vault = artifacts.chart("vault").unwrap();
    std::fs::write(
        bundle.path().join("charts").join(vault.tarball_name()),
        b"tampered",
    )
    .unwrap();
    let err = RenderInputs::from_bundle(bundle.path(), &artifacts).unwrap_err();
    assert!(format!("{err:#}").contains("does not match"), "{err:#}");
    // A missing one too, naming how to get it.
    std::fs::remove_file(bundle.path().join("charts").join(vault.tarball_name())).unwrap();
    let err = RenderInputs::from_bundle(bundle.path(), &artifacts).unwrap_err();
    assert!(format!("{err:#}").contains("helm pull vault"), "{err:#}");
}

#[test]
fn manifests_cronjobs_have_least_privilege_and_history_limits() {
    let rendered = render(&Config::default());
    for name in ["vault-auto-unseal", "eso-recovery"] {
        let cj = find(&rendered, "CronJob", name);
        assert_eq!(cj["metadata"]["namespace"], "security");
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid");
        assert!(cj["spec"]["successfulJobsHistoryLimit"].is_i64());
        assert!(cj["spec"]["failedJobsHistoryLimit"].is_i64());
        let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], name);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let container = &pod["containers"][0];
        assert_eq!(container["command"][0], "/bin/sh");
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert!(
            container["image"].as_str().unwrap().contains(':'),
            "pinned tag"
        );
    }
    assert_eq!(
        find(&rendered, "CronJob", "vault-auto-unseal")["spec"]["schedule"],
        "* * * * *"
    );
    // The unseal job talks to no API: no token, no RBAC bound to it.
    let sa = find(&rendered, "ServiceAccount", "vault-auto-unseal");
    assert_eq!(sa["automountServiceAccountToken"], false);
    let bindings: Vec<&Value> = all_objects(&rendered)
        .into_iter()
        .filter(|o| o["kind"].as_str().unwrap().ends_with("Binding"))
        .collect();
    assert_eq!(bindings.len(), 2);
    for b in &bindings {
        assert_eq!(
            b["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": "eso-recovery", "namespace": "security"}])
        );
    }
    // The key is a mounted file, readable by the pod's group only.
    let pod = &find(&rendered, "CronJob", "vault-auto-unseal")["spec"]["jobTemplate"]["spec"]
        ["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        "vault-unseal-key"
    );
    assert_eq!(pod["volumes"][0]["secret"]["defaultMode"], 0o440);
    assert_eq!(pod["containers"][0]["volumeMounts"][0]["readOnly"], true);
    // eso-recovery: get on the one store; get+patch on the three Deployments only.
    let rules = |kind: &str| {
        all_objects(&rendered)
            .into_iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == "eso-recovery")
            .unwrap()["rules"]
            .clone()
    };
    assert_eq!(
        rules("ClusterRole"),
        serde_json::json!([{"apiGroups": ["external-secrets.io"], "resources": ["clustersecretstores"], "resourceNames": ["k8s-secrets"], "verbs": ["get"]}])
    );
    assert_eq!(
        rules("Role"),
        serde_json::json!([{"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["external-secrets", "external-secrets-webhook", "external-secrets-cert-controller"], "verbs": ["get", "patch"]}])
    );
}

#[test]
fn manifests_unseal_key_secret_matches_what_the_cronjob_mounts() {
    let c = Config::default();
    let secret = manifests::unseal_key_secret(&c, &["aa11", " bb22\n"]);
    manifests_support::check_core(&secret).unwrap();
    assert_eq!(secret["metadata"]["name"], "vault-unseal-key");
    assert_eq!(secret["metadata"]["namespace"], "security");
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["key"].as_str().unwrap())
        .unwrap();
    assert_eq!(text, b"aa11\nbb22\n");
    let cronjob = find(&render(&c), "CronJob", "vault-auto-unseal").clone();
    let volume = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(volume["secret"]["secretName"], secret["metadata"]["name"]);
    assert_eq!(volume["secret"]["items"][0]["key"], "key");
    assert!(secret["data"].get("key").is_some());
}
