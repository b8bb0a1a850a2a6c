//! Fidelity tests of lab-vault across restarts, through the real `lab-vault` binary: a
//! SIGKILL is a power loss; the data dir (what Longhorn restores) brings Vault back
//! initialised and sealed, and only the key of record opens it
//! (`../shared/reference/platform-facts.md` §1, "Rekey": pending rekey state is in memory).

mod vault_support;

use std::path::Path;
use std::process::Stdio;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use vault_support::{errors, Vault};

struct Proc {
    child: tokio::process::Child,
    vault: Vault,
}

/// Starts `lab-vault --listen 127.0.0.1:0 --data-dir DIR` and reads the bound address.
async fn spawn(dir: &Path) -> Proc {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lab-vault"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("lab-vault starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("lab-vault prints its address in time")
        .unwrap()
        .expect("an address line");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    Proc {
        child,
        vault: Vault::new(format!("http://{addr}")),
    }
}

impl Proc {
    /// SIGKILL: nothing is flushed or saved on the way down.
    async fn power_loss(mut self) {
        self.child.kill().await.unwrap();
    }
}

#[tokio::test]
async fn vault_restart_comes_back_initialised_sealed_and_opens_with_original_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path()).await;
    let init = p.vault.init(5, 3).await;
    assert_eq!(p.vault.unseal_all(&init.keys[0..3]).await["sealed"], false);
    // the state file holds no share and no token in the clear
    let state = std::fs::read_to_string(dir.path().join(rebox_lab::vault::STATE_FILE)).unwrap();
    for secret in init
        .keys
        .iter()
        .chain(&init.keys_base64)
        .chain([&init.root_token])
    {
        assert!(!state.contains(secret.as_str()));
    }
    p.power_loss().await;

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
    assert!(errors(&e)
        .join(" ")
        .contains("message authentication failed"));
    assert_eq!(p.vault.status().await["sealed"], true);

    assert_eq!(
        p.vault.unseal_all(&init.keys_base64[2..5]).await["sealed"],
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
    p.vault.unseal_all(&init.keys[0..3]).await;
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
    assert_eq!(p.vault.unseal_all(&init.keys[1..4]).await["sealed"], false);
    assert_eq!(p.vault.get("/v1/sys/rekey/init").await.1["started"], false);
    p.power_loss().await;
}

#[tokio::test]
async fn vault_restart_after_a_completed_rekey_opens_with_the_new_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path()).await;
    let init = p.vault.init(3, 2).await;
    p.vault.unseal_all(&init.keys[0..2]).await;
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

#[tokio::test]
async fn vault_restart_refuses_a_corrupt_data_dir_loudly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(rebox_lab::vault::STATE_FILE),
        b"{half a file",
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lab-vault"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "a corrupt state must not start as a fresh Vault"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lab-vault.json"), "{err}");
}
