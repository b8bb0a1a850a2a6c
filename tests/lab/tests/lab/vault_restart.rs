//! The real server's restart behaviour the lab and rebox rely on, checked against OpenBao's
//! `bao` (the lab's Vault, `rebox_lab::bao`): a SIGKILL is a power loss or a container
//! restart; the data dir (raft's path, what Longhorn restores) brings Vault back initialised
//! and sealed, and only the key of record opens it; a pending rekey (state in process memory,
//! `../shared/reference/platform-facts.md` §1 "Rekey") is gone and the old key stays valid.
//! rebox's crash-safe rotation is built on exactly this.

use crate::vault_support;

use serde_json::json;
use vault_support::{errors, Vault};

struct Proc {
    bao: rebox_lab::bao::Bao,
    vault: Vault,
}

/// Starts `bao server` over `dir` on 127.0.0.1 and waits until it answers.
async fn spawn(dir: &std::path::Path) -> Proc {
    let bao = rebox_lab::bao::Bao::start(dir).await.expect("bao starts");
    let vault = Vault::new(bao.url());
    Proc { bao, vault }
}

impl Proc {
    /// SIGKILL: nothing is flushed or saved on the way down.
    async fn power_loss(self) {
        self.bao.stop().await;
    }
    /// Unseals with `keys` and waits until the node is raft's active one.
    async fn unseal_active(&self, keys: &[String]) -> serde_json::Value {
        let s = self.vault.unseal_all(keys).await;
        if s["sealed"] == false {
            self.bao.wait_active().await;
        }
        s
    }
}

#[tokio::test]
async fn vault_restart_comes_back_initialised_sealed_and_opens_with_original_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path()).await;
    let init = p.vault.init(5, 3).await;
    assert_eq!(p.unseal_active(&init.keys[0..3]).await["sealed"], false);
    p.power_loss().await;
    // raft's files are in the data dir (what Longhorn backs up), none holds a share in the clear
    for f in ["vault.db", "raft/raft.db"] {
        let bytes = std::fs::read(dir.path().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        for secret in init.keys.iter().chain(&init.keys_base64) {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{f} holds a share"
            );
        }
    }

    // a different vault's genuine keys, to try against the restarted one
    let other_dir = tempfile::tempdir().unwrap();
    let other = spawn(other_dir.path()).await;
    let foreign = other.vault.init(5, 3).await;
    other.power_loss().await;

    let p = spawn(dir.path()).await;
    let s = p.vault.status().await;
    assert_eq!(s["initialized"], true);
    assert_eq!(s["sealed"], true);
    assert_eq!((s["t"].clone(), s["n"].clone()), (json!(3), json!(5)));
    assert_eq!(
        s["progress"], 0,
        "unseal progress does not survive a restart"
    );
    let (code, e) = p
        .vault
        .put(
            "/v1/sys/init",
            json!({"secret_shares": 1, "secret_threshold": 1}),
        )
        .await;
    assert_eq!(code, 400, "never re-initialised: {e}");
    assert_eq!(p.vault.get("/v1/sys/health").await.0, 503);

    p.vault.unseal_all(&foreign.keys[0..2]).await;
    let (code, e) = p.vault.unseal(&foreign.keys[2]).await;
    assert_eq!(code, 400);
    assert_eq!(
        errors(&e),
        ["unable to retrieve stored keys: invalid key: failed to decrypt keys from storage: cipher: message authentication failed"],
        "bao's words for a wrong key"
    );
    assert_eq!(p.vault.status().await["sealed"], true);

    assert_eq!(
        p.unseal_active(&init.keys_base64[2..5]).await["sealed"],
        false
    );
    // the root token is behind the barrier and survived too
    p.vault.seal(&init.root_token).await;
    p.power_loss().await;
}

#[tokio::test]
async fn vault_restart_drops_a_pending_rekey_and_keeps_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path()).await;
    let init = p.vault.init(5, 3).await;
    p.unseal_active(&init.keys[0..3]).await;
    let (_, r) = p
        .vault
        .put(
            "/v1/sys/rekey/init",
            json!({"secret_shares": 3, "secret_threshold": 2, "require_verification": true}),
        )
        .await;
    let nonce = r["nonce"].as_str().unwrap().to_string();
    let mut done = json!(null);
    for k in &init.keys[0..3] {
        let (code, r) = p
            .vault
            .put("/v1/sys/rekey/update", json!({"key": k, "nonce": nonce}))
            .await;
        assert_eq!(code, 200, "{r}");
        done = r;
    }
    assert_eq!(done["complete"], true);
    let new_keys: Vec<String> = done["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    // crash between "new shares handed out" and "verification done"
    p.power_loss().await;

    let p = spawn(dir.path()).await;
    let s = p.vault.status().await;
    assert_eq!(
        (s["sealed"].clone(), s["t"].clone()),
        (json!(true), json!(3))
    );
    p.vault.unseal_all(&new_keys[0..2]).await;
    let (code, _) = p.vault.unseal(&new_keys[2]).await;
    assert_eq!(code, 400, "unverified new shares never became the key");
    assert_eq!(p.unseal_active(&init.keys[1..4]).await["sealed"], false);
    assert_eq!(p.vault.get("/v1/sys/rekey/init").await.1["started"], false);
    p.power_loss().await;
}

#[tokio::test]
async fn vault_restart_after_a_completed_rekey_opens_with_the_new_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path()).await;
    let init = p.vault.init(3, 2).await;
    p.unseal_active(&init.keys[0..2]).await;
    let (_, r) = p
        .vault
        .put(
            "/v1/sys/rekey/init",
            json!({"secret_shares": 1, "secret_threshold": 1, "require_verification": true}),
        )
        .await;
    let nonce = r["nonce"].as_str().unwrap().to_string();
    p.vault
        .put(
            "/v1/sys/rekey/update",
            json!({"key": init.keys[0], "nonce": nonce}),
        )
        .await;
    let (_, done) = p
        .vault
        .put(
            "/v1/sys/rekey/update",
            json!({"key": init.keys[1], "nonce": nonce}),
        )
        .await;
    let new_key = done["keys"][0].as_str().unwrap().to_string();
    let (code, v) = p
        .vault
        .put(
            "/v1/sys/rekey/verify",
            json!({"key": new_key, "nonce": done["verification_nonce"]}),
        )
        .await;
    assert_eq!((code, v["complete"].clone()), (200, json!(true)), "{v}");
    p.power_loss().await;

    let p = spawn(dir.path()).await;
    let s = p.vault.status().await;
    assert_eq!(
        (s["sealed"].clone(), s["t"].clone(), s["n"].clone()),
        (json!(true), json!(1), json!(1))
    );
    let (code, _) = p.vault.unseal(&init.keys[2]).await;
    assert_eq!(code, 400, "an old share no longer opens it");
    let (code, s) = p.vault.unseal(&new_key).await;
    assert_eq!((code, s["sealed"].clone()), (200, json!(false)));
    p.power_loss().await;
}
