//! lab-vault's "Vault refuses keys" fault switch: with `vaultRefuseUnseal` set in the file
//! named by LAB_FAULTS, even the right key is refused as Vault refuses a wrong one; cleared,
//! the same key unseals.

mod vault_support;

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use vault_support::{errors, Vault};

#[tokio::test]
async fn vault_refuse_unseal_switch_refuses_the_right_key_until_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let faults = dir.path().join("lab-faults.json");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lab-vault"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("LAB_FAULTS", &faults)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = lines
        .next_line()
        .await
        .unwrap()
        .expect("lab-vault prints its address");
    let vault = Vault::new(format!("http://{addr}"));
    let init = vault.init(1, 1).await;
    assert_eq!(vault.status().await["sealed"], true);

    std::fs::write(&faults, r#"{"vaultRefuseUnseal": true}"#).unwrap();
    let (code, body) = vault.unseal(&init.keys[0]).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        errors(&body)
            .iter()
            .any(|e| e.contains("message authentication failed")),
        "{body}"
    );
    let status = vault.status().await;
    assert_eq!(
        (status["sealed"].clone(), status["progress"].clone()),
        (true.into(), 0.into())
    );

    std::fs::write(&faults, "{}").unwrap();
    let (code, body) = vault.unseal(&init.keys[0]).await;
    assert_eq!(
        (code, body["sealed"].clone()),
        (200, false.into()),
        "{body}"
    );
}
