//! The token-authenticated Vault calls rebox makes to ready Vault for ESO (`vault::admin`) and
//! the short-lived root token from the unseal key (`vault::root`, `sys/generate-root` with a
//! one-time pad), against the real OpenBao server (`rebox_lab::bao`) on 127.0.0.1.
//!
//! Not here (needs the lab: a pod's service-account files and a TokenReview-serving API
//! server): writing `auth/kubernetes/config` in-cluster (bao reads
//! /var/run/secrets/kubernetes.io/serviceaccount/ca.crt at write time and answers 400 without
//! it) and a login that Vault accepts.

use rebox::secret::SecretText;
use rebox::vault::{KeyUse, VaultClient, VaultError};
use tempfile::TempDir;

struct Unsealed {
    _dir: TempDir,
    server: rebox_lab::bao::Bao,
    client: VaultClient,
    shares: Vec<SecretText>,
    root: SecretText,
}

/// A real Vault, initialised (`shares`/`threshold`), unsealed and active.
async fn unsealed(shares: u32, threshold: u32) -> Unsealed {
    rebox::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let server = rebox_lab::bao::Bao::start(dir.path()).await.unwrap();
    let client = VaultClient::new(server.url()).unwrap();
    let init = client.init(shares, threshold).await.unwrap();
    for k in init.keys.iter().take(threshold as usize) {
        client.unseal(k).await.unwrap();
    }
    client.wait_active().await.unwrap();
    Unsealed {
        _dir: dir,
        server,
        client,
        shares: init.keys,
        root: init.root_token,
    }
}

fn in_use(e: &VaultError) -> bool {
    matches!(e, VaultError::Other { status: 400, errors } if errors.iter().any(|m| m.contains("already in use")))
}

#[tokio::test]
async fn vault_admin_kv_auth_policy_role_on_the_real_server() {
    let v = unsealed(1, 1).await;
    let (c, root) = (&v.client, &v.root);

    // KV v2: enabled, listed as kv version 2; a second enable is done, not an error.
    assert_eq!(c.secrets_engine(root, "secret").await.unwrap(), None);
    c.enable_kv(root, "secret", "2").await.unwrap();
    let m = c.secrets_engine(root, "secret/").await.unwrap().unwrap();
    assert_eq!((m.kind.as_str(), m.version()), ("kv", Some("2")));
    c.enable_kv(root, "secret", "2").await.unwrap();
    // The same path asked as KV v1: taken by something else, refused (never replaced).
    let e = c.enable_kv(root, "secret", "1").await.unwrap_err();
    assert!(in_use(&e), "{e:?}");
    assert!(e.to_string().contains("not KV v1"), "{e}");
    // A KV v1 mount is not a KV v2 one.
    c.enable_kv(root, "kv1", "1").await.unwrap();
    let e = c.enable_kv(root, "kv1", "2").await.unwrap_err();
    assert!(e.to_string().contains("not KV v2"), "{e}");

    // Kubernetes auth: enabled, listed; a second enable is done; another type is refused.
    assert_eq!(c.auth_method(root, "kubernetes").await.unwrap(), None);
    c.enable_auth(root, "kubernetes", "kubernetes")
        .await
        .unwrap();
    let m = c.auth_method(root, "kubernetes").await.unwrap().unwrap();
    assert_eq!(m.kind, "kubernetes");
    c.enable_auth(root, "kubernetes", "kubernetes")
        .await
        .unwrap();
    let e = c
        .enable_auth(root, "kubernetes", "approle")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not approle"), "{e}");

    // ESO's policy, as rebox writes it, read back as written.
    let policy = rebox::site::eso_auth::policy("secret", "v2");
    c.write(
        root,
        "sys/policies/acl/external-secrets",
        &serde_json::json!({ "policy": policy }),
    )
    .await
    .unwrap();
    let back = c
        .read(root, "sys/policies/acl/external-secrets")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back["policy"].as_str(), Some(policy.as_str()));

    // ESO's role, bound to its service account and namespace.
    c.write(
        root,
        "auth/kubernetes/role/external-secrets",
        &serde_json::json!({
            "bound_service_account_names": ["external-secrets"],
            "bound_service_account_namespaces": ["security"],
            "token_policies": ["external-secrets"],
            "token_ttl": "1h",
        }),
    )
    .await
    .unwrap();
    let role = c
        .read(root, "auth/kubernetes/role/external-secrets")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        role["bound_service_account_names"],
        serde_json::json!(["external-secrets"])
    );
    assert_eq!(
        role["bound_service_account_namespaces"],
        serde_json::json!(["security"])
    );
    assert_eq!(
        role["token_policies"],
        serde_json::json!(["external-secrets"])
    );

    // A read of nothing is None, not an error; a login Vault cannot check is a refusal
    // (VaultError::Other: what eso_login reports as "Refused").
    assert!(c
        .read(root, "secret/data/rebox-login-probe")
        .await
        .unwrap()
        .is_none());
    let jwt = SecretText::new("not.a-service-account.token".into());
    let e = c
        .kubernetes_login("kubernetes", "external-secrets", &jwt)
        .await
        .unwrap_err();
    assert!(matches!(e, VaultError::Other { .. }), "{e:?}");
    assert!(!e.to_string().contains(jwt.expose()));

    // A token that is not Vault's is refused for admin calls.
    let junk = SecretText::new("s.not-a-token-of-this-vault".into());
    assert!(c.secrets_engine(&junk, "secret").await.is_err());
    drop(v.server);
}

#[tokio::test]
async fn vault_generate_root_makes_a_working_token_that_revoke_self_ends() {
    let v = unsealed(1, 1).await;
    let c = &v.client;
    assert!(!c.generate_root_in_progress().await.unwrap());

    let token = c.generate_root(&v.shares).await.unwrap();
    assert_ne!(token.expose(), v.root.expose(), "the same token twice");
    assert!(!c.generate_root_in_progress().await.unwrap());
    // It works, and it is a root token.
    let me = c
        .read(&token, "auth/token/lookup-self")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(me["policies"], serde_json::json!(["root"]), "{me}");
    c.enable_kv(&token, "secret", "2").await.unwrap();

    // Revoked, it no longer works.
    c.revoke_self(&token).await.unwrap();
    let e = c.read(&token, "auth/token/lookup-self").await.unwrap_err();
    assert!(matches!(e, VaultError::Other { status: 403, .. }), "{e:?}");
    assert!(!e.to_string().contains(token.expose()));
    assert!(c.secrets_engine(&token, "secret").await.is_err());
    // The init's root token is untouched by that.
    assert!(c.secrets_engine(&v.root, "secret").await.unwrap().is_some());
}

#[tokio::test]
async fn vault_generate_root_with_a_wrong_or_short_key_leaves_nothing_in_progress() {
    // A wrong share: refused as a key for root generation, the attempt cancelled.
    let v = unsealed(1, 1).await;
    let wrong = SecretText::new("bm90LXRoZS1rZXktb2YtdGhpcy12YXVsdC0wMDAwMDA=".into());
    let e = v.client.generate_root(&[wrong]).await.unwrap_err();
    assert!(
        matches!(
            e,
            VaultError::BadKey {
                during: KeyUse::GenerateRoot,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!v.client.generate_root_in_progress().await.unwrap());
    // The right key still works afterwards.
    let t = v.client.generate_root(&v.shares).await.unwrap();
    v.client.revoke_self(&t).await.unwrap();

    // Fewer shares than the threshold: NotEnoughShares, the attempt cancelled.
    let v = unsealed(3, 2).await;
    let e = v.client.generate_root(&v.shares[..1]).await.unwrap_err();
    assert!(
        matches!(
            e,
            VaultError::NotEnoughShares {
                given: 1,
                threshold: 2
            }
        ),
        "{e:?}"
    );
    assert!(!v.client.generate_root_in_progress().await.unwrap());
    let t = v.client.generate_root(&v.shares[1..]).await.unwrap();
    v.client.revoke_self(&t).await.unwrap();
}

/// On OpenBao's own defaults the unauthenticated `sys/generate-root/*` endpoints are off:
/// rebox says exactly that, names the listener switch, and no attempt is left behind.
#[tokio::test]
async fn vault_generate_root_on_openbao_defaults_names_the_disabled_endpoint() {
    rebox::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let server = rebox_lab::bao::Bao::start_with(dir.path(), true)
        .await
        .unwrap();
    let client = VaultClient::new(server.url()).unwrap();
    let init = client.init(1, 1).await.unwrap();
    client.unseal(&init.keys[0]).await.unwrap();
    client.wait_active().await.unwrap();
    let e = client.generate_root(&init.keys).await.unwrap_err();
    assert!(
        matches!(e, VaultError::UnauthedEndpointsDisabled { .. }),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains("sys/generate-root"), "{text}");
    assert!(
        e.next()
            .contains("disable_unauthed_generate_root_endpoints = false"),
        "{}",
        e.next()
    );
}
