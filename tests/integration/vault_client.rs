//! The Vault client (`rebox::vault`) against the real OpenBao server (`rebox_lab::bao`, the
//! lab's Vault, on 127.0.0.1): unseal with progress, wrong and malformed keys, uninitialised and
//! sealed Vaults, rekey with verification and its nonce discipline, unreachable addresses,
//! and no secret in trace-level logs.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rebox::secret::SecretText;
use rebox::vault::{
    KeyUse, RekeyKeys, RekeyUpdate, UnsealProgress, VaultClient, VaultError, VerifyUpdate,
};
use tempfile::TempDir;

/// A lab Vault with its data dir and a client for it.
struct Lab {
    _dir: TempDir,
    server: rebox_lab::bao::Bao,
    client: VaultClient,
}

async fn lab() -> Lab {
    rebox::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let server = rebox_lab::bao::Bao::start(dir.path()).await.unwrap();
    let client = VaultClient::new(server.url()).unwrap();
    Lab {
        _dir: dir,
        server,
        client,
    }
}

/// An initialised lab Vault (sealed) with its shares and root token.
async fn initialised(shares: u32, threshold: u32) -> (Lab, Vec<SecretText>, SecretText) {
    let lab = lab().await;
    let init = lab.client.init(shares, threshold).await.unwrap();
    assert_eq!(init.keys.len(), shares as usize);
    (lab, init.keys, init.root_token)
}

fn progress(p: u32, t: u32, sealed: bool) -> UnsealProgress {
    UnsealProgress {
        progress: p,
        threshold: t,
        sealed,
    }
}

/// Seals through Vault's own `sys/seal` with the root token (the client has no seal call:
/// rebox never seals a Vault).
async fn seal(lab: &Lab, root: &SecretText) {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/v1/sys/seal", lab.server.url()))
        .header("X-Vault-Token", root.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204, "sys/seal");
    assert!(lab.client.seal_status().await.unwrap().sealed);
}

/// Runs a rekey to `shares`/`threshold` with verification up to the new shares.
async fn rekey_to_new_shares(
    lab: &Lab,
    old: &[SecretText],
    shares: u32,
    threshold: u32,
) -> RekeyKeys {
    let st = lab
        .client
        .rekey_init(shares, threshold, true)
        .await
        .unwrap();
    assert!(st.started && st.verification_required);
    for (i, s) in old.iter().enumerate() {
        match lab.client.rekey_update(s, &st.nonce).await.unwrap() {
            RekeyUpdate::Progress(p) => assert_eq!(p.progress, i as u32 + 1),
            RekeyUpdate::Complete(keys) => {
                assert_eq!(i + 1, st.required as usize, "complete at the old threshold");
                return keys;
            }
        }
    }
    panic!("rekey did not complete with {} old shares", old.len());
}

#[tokio::test]
async fn vault_client_init_then_unseal_all_reports_progress() {
    let (lab, keys, _root) = initialised(5, 3).await;
    let st = lab.client.seal_status().await.unwrap();
    assert!(st.initialized && st.sealed);
    assert_eq!((st.threshold, st.shares, st.progress), (3, 5, 0));

    let mut seen = vec![];
    let st = lab
        .client
        .unseal_all(&keys[1..4], |p| seen.push(p))
        .await
        .unwrap();
    assert!(!st.sealed);
    assert_eq!(
        seen,
        [
            progress(1, 3, true),
            progress(2, 3, true),
            progress(0, 3, false)
        ]
    );
    let h = lab.client.health().await.unwrap();
    assert_eq!((h.code, h.initialized, h.sealed), (200, true, false));
    // Already unsealed: nothing is submitted, nothing reported.
    let mut again = vec![];
    let st = lab
        .client
        .unseal_all(&keys[..3], |p| again.push(p))
        .await
        .unwrap();
    assert!(!st.sealed && again.is_empty());
}

#[tokio::test]
async fn vault_client_unseal_all_skips_duplicates_and_accepts_base64() {
    let lab = lab().await;
    let init = lab.client.init(5, 3).await.unwrap();
    // Vault ignores a share it already has: no step is reported for it.
    let shares = [
        init.keys_base64[0].clone(),
        init.keys_base64[0].clone(),
        init.keys[2].clone(),
        init.keys[4].clone(),
    ];
    let mut seen = vec![];
    let st = lab
        .client
        .unseal_all(&shares, |p| seen.push(p))
        .await
        .unwrap();
    assert!(!st.sealed);
    assert_eq!(
        seen,
        [
            progress(1, 3, true),
            progress(2, 3, true),
            progress(0, 3, false)
        ]
    );
}

#[tokio::test]
async fn vault_client_wrong_key_is_bad_key_and_progress_resets() {
    let (lab, keys, _) = initialised(5, 3).await;
    let (_other, wrong, _) = initialised(5, 3).await;

    let mut seen = vec![];
    let err = lab
        .client
        .unseal_all(&wrong[..3], |p| seen.push(p))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::BadKey {
                during: KeyUse::Unseal,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("does not open this Vault"), "{msg}");
    assert!(
        err.next().contains("rebox key verify FILE"),
        "{}",
        err.next()
    );
    for k in &wrong {
        assert!(
            !msg.contains(k.expose()),
            "a share leaked into the error: {msg}"
        );
    }
    assert_eq!(seen, [progress(1, 3, true), progress(2, 3, true)]);
    let st = lab.client.seal_status().await.unwrap();
    assert!(st.sealed);
    assert_eq!(st.progress, 0, "Vault discarded the attempt");

    // A 1-of-1 Vault refuses a single wrong key the same way.
    let (single, _, _) = initialised(1, 1).await;
    let err = single.client.unseal(&wrong[0]).await.unwrap_err();
    assert!(err.is_bad_key(), "{err:?}");

    // The right key still opens the first Vault afterwards.
    assert!(
        !lab.client
            .unseal_all(&keys[..3], |_| {})
            .await
            .unwrap()
            .sealed
    );
}

#[tokio::test]
async fn vault_client_unseal_all_resets_a_stale_attempt_first() {
    let (lab, keys, _) = initialised(5, 3).await;
    let (_other, foreign, _) = initialised(5, 3).await;
    // Someone left a share of another Vault in an unfinished attempt.
    let st = lab.client.unseal(&foreign[0]).await.unwrap();
    assert_eq!(st.progress, 1);
    let mut seen = vec![];
    let st = lab
        .client
        .unseal_all(&keys[..3], |p| seen.push(p))
        .await
        .unwrap();
    assert!(!st.sealed, "the stranger's share was not mixed in");
    assert_eq!(seen.first(), Some(&progress(1, 3, true)));
}

#[tokio::test]
async fn vault_client_too_few_or_malformed_shares_leave_no_attempt_behind() {
    let (lab, keys, _) = initialised(5, 3).await;
    let err = lab.client.unseal_all(&keys[..2], |_| {}).await.unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::NotEnoughShares {
                given: 2,
                threshold: 3
            }
        ),
        "{err:?}"
    );
    assert_eq!(lab.client.seal_status().await.unwrap().progress, 0);

    let bad = [keys[0].clone(), SecretText::new("zz-not-a-key!".into())];
    let err = lab.client.unseal_all(&bad, |_| {}).await.unwrap_err();
    assert!(matches!(err, VaultError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("hex or base64"), "{err}");
    assert_eq!(lab.client.seal_status().await.unwrap().progress, 0);
}

#[tokio::test]
async fn vault_client_uninitialised_vault_is_classified() {
    let lab = lab().await;
    let st = lab.client.seal_status().await.unwrap();
    assert!(!st.initialized && st.sealed);
    let h = lab.client.health().await.unwrap();
    assert_eq!((h.code, h.initialized), (501, false));

    let some_share = SecretText::new("00".repeat(33));
    let err = lab
        .client
        .unseal_all(std::slice::from_ref(&some_share), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NotInitialized { .. }), "{err:?}");
    assert!(
        err.next().contains("restored from the NAS"),
        "{}",
        err.next()
    );
    let err = lab.client.unseal(&some_share).await.unwrap_err();
    assert!(matches!(err, VaultError::NotInitialized { .. }), "{err:?}");
    // The real server answers a rekey status on an uninitialised Vault with 503 "Vault is
    // sealed" (the lab's former stand-in said "not initialized").
    let err = lab.client.rekey_status().await.unwrap_err();
    assert!(matches!(err, VaultError::Sealed { .. }), "{err:?}");

    // Init happens once; a second init is refused and named.
    lab.client.init(1, 1).await.unwrap();
    let err = lab.client.init(1, 1).await.unwrap_err();
    assert!(
        matches!(err, VaultError::AlreadyInitialized { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn vault_client_sealed_only_endpoints_say_sealed() {
    let (lab, _, _) = initialised(3, 2).await;
    let h = lab.client.health().await.unwrap();
    assert_eq!((h.code, h.sealed), (503, true));
    let errs = [
        lab.client.rekey_status().await.unwrap_err(),
        lab.client.rekey_init(1, 1, true).await.unwrap_err(),
        lab.client.rekey_verify_status().await.unwrap_err(),
        lab.client.rekey_cancel("n").await.unwrap_err(),
    ];
    for e in errs {
        assert!(matches!(e, VaultError::Sealed { .. }), "{e:?}");
        assert!(e.next().contains("rebox unseal"), "{}", e.next());
    }
}

#[tokio::test]
async fn vault_client_rekey_with_verification_rotates_only_when_verified() {
    let (lab, old, root) = initialised(5, 3).await;
    lab.client.unseal_all(&old[..3], |_| {}).await.unwrap();

    // 1. New shares produced but not verified: nothing rotated.
    let new = rekey_to_new_shares(&lab, &old[..3], 3, 2).await;
    assert_eq!(new.keys.len(), 3);
    assert!(new.verification_required);
    let vnonce = new.verification_nonce.clone().expect("verification nonce");
    let vs = lab.client.rekey_verify_status().await.unwrap();
    assert!(vs.started);
    assert_eq!(
        (vs.nonce.as_str(), vs.threshold, vs.progress),
        (vnonce.as_str(), 2, 0)
    );
    // A restart/seal drops the pending rekey: the old key still opens Vault, the new not.
    seal(&lab, &root).await;
    // (Vault still wants 3 shares: its current 3-of-5 configuration.)
    let err = lab
        .client
        .unseal_all(&new.keys[..3], |_| {})
        .await
        .unwrap_err();
    assert!(
        err.is_bad_key(),
        "unverified new key must not open Vault: {err:?}"
    );
    lab.client.unseal_all(&old[2..5], |_| {}).await.unwrap();

    // 2. Rekey again and verify: from now on only the new key opens Vault.
    let new = rekey_to_new_shares(&lab, &old[..3], 3, 2).await;
    let vnonce = new.verification_nonce.clone().unwrap();
    match lab
        .client
        .rekey_verify(&new.keys[0], &vnonce)
        .await
        .unwrap()
    {
        VerifyUpdate::Progress(p) => assert_eq!((p.progress, p.threshold), (1, 2)),
        other => panic!("verified with one of two shares: {other:?}"),
    }
    // Until the last verify call the old key is the valid one.
    match lab
        .client
        .rekey_verify(&new.keys_base64[2], &vnonce)
        .await
        .unwrap()
    {
        VerifyUpdate::Complete { nonce } => assert_eq!(nonce, vnonce),
        other => panic!("not complete at the threshold: {other:?}"),
    }
    assert!(!lab.client.rekey_status().await.unwrap().started);
    seal(&lab, &root).await;
    let err = lab.client.unseal_all(&old[..3], |_| {}).await.unwrap_err();
    assert!(
        err.is_bad_key(),
        "old key must be dead after verification: {err:?}"
    );
    let mut seen = vec![];
    let st = lab
        .client
        .unseal_all(&new.keys[1..3], |p| seen.push(p))
        .await
        .unwrap();
    assert!(!st.sealed);
    assert_eq!((st.threshold, st.shares), (2, 3));
    assert_eq!(seen, [progress(1, 2, true), progress(0, 2, false)]);
}

#[tokio::test]
async fn vault_client_rekey_wrong_keys_and_wrong_new_shares() {
    let (lab, old, _) = initialised(3, 2).await;
    let (_other, foreign, _) = initialised(3, 2).await;
    lab.client.unseal_all(&old[..2], |_| {}).await.unwrap();

    let st = lab.client.rekey_init(1, 1, true).await.unwrap();
    lab.client
        .rekey_update(&foreign[0], &st.nonce)
        .await
        .unwrap();
    let err = lab
        .client
        .rekey_update(&foreign[1], &st.nonce)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::BadKey {
                during: KeyUse::RekeyOldKey,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(lab.client.rekey_status().await.unwrap().progress, 0);

    // The same share twice is refused during a rekey (unlike unseal).
    lab.client.rekey_update(&old[0], &st.nonce).await.unwrap();
    let err = lab
        .client
        .rekey_update(&old[0], &st.nonce)
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::DuplicateShare), "{err:?}");
    let new = match lab.client.rekey_update(&old[1], &st.nonce).await.unwrap() {
        RekeyUpdate::Complete(k) => k,
        RekeyUpdate::Progress(p) => panic!("not complete: {p:?}"),
    };
    let vnonce = new.verification_nonce.clone().unwrap();
    // Old shares while verification is pending: named, with the verification nonce.
    let err = lab
        .client
        .rekey_update(&old[2], &st.nonce)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::VerificationPending { nonce: Some(n) } if *n == vnonce),
        "{err:?}"
    );
    // An old share given as the new one does not verify.
    let err = lab.client.rekey_verify(&old[0], &vnonce).await.unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::BadKey {
                during: KeyUse::VerifyNewKey,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("old key is still the only one"),
        "{err}"
    );
    // Cancelled during verification: the rekey is gone, nothing rotated.
    lab.client.rekey_cancel(&st.nonce).await.unwrap();
    let err = lab
        .client
        .rekey_update(&old[0], &st.nonce)
        .await
        .unwrap_err();
    assert!(
        matches!(err, VaultError::NoRekeyInProgress { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn vault_client_nonce_mismatch_is_named() {
    let (lab, old, _) = initialised(1, 1).await;
    lab.client.unseal_all(&old, |_| {}).await.unwrap();
    let st = lab.client.rekey_init(1, 1, true).await.unwrap();

    let err = lab
        .client
        .rekey_update(&old[0], "not-the-nonce")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::NonceMismatch { expected: Some(n) } if *n == st.nonce),
        "{err:?}"
    );
    // OpenBao 2.7.2 cancels a rekey whatever nonce comes with the DELETE
    // (internal/http/sys_rekey.go, handleSysRekeyInitDelete ignores the body); HashiCorp
    // Vault >= 1.20 refuses a wrong one for a young rekey. The lab's former stand-in refused
    // it. rebox only ever cancels with its own journalled nonce, so both are safe for it.
    lab.client.rekey_cancel("not-the-nonce").await.unwrap();
    assert!(!lab.client.rekey_status().await.unwrap().started);
    let st = lab.client.rekey_init(1, 1, true).await.unwrap();

    let new = match lab.client.rekey_update(&old[0], &st.nonce).await.unwrap() {
        RekeyUpdate::Complete(k) => k,
        RekeyUpdate::Progress(p) => panic!("1-of-1 rekey not complete: {p:?}"),
    };
    let err = lab
        .client
        .rekey_verify(&new.keys[0], &st.nonce)
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NonceMismatch { .. }), "{err:?}");
    // Restarting verification gives a new nonce; the old one is then a mismatch.
    let vs = lab.client.rekey_verify_restart().await.unwrap();
    let old_vnonce = new.verification_nonce.clone().unwrap();
    assert_ne!(vs.nonce, old_vnonce);
    let err = lab
        .client
        .rekey_verify(&new.keys[0], &old_vnonce)
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NonceMismatch { .. }), "{err:?}");
    assert!(matches!(
        lab.client
            .rekey_verify(&new.keys[0], &vs.nonce)
            .await
            .unwrap(),
        VerifyUpdate::Complete { .. }
    ));
}

#[tokio::test]
async fn vault_client_rekey_in_progress_is_reported_not_clobbered() {
    let (lab, old, _) = initialised(3, 2).await;
    lab.client.unseal_all(&old[..2], |_| {}).await.unwrap();
    let first = lab.client.rekey_init(5, 3, true).await.unwrap();
    lab.client
        .rekey_update(&old[0], &first.nonce)
        .await
        .unwrap();

    let err = lab.client.rekey_init(1, 1, false).await.unwrap_err();
    match &err {
        VaultError::RekeyInProgress {
            nonce: Some(n),
            verification_pending: false,
            ..
        } => assert_eq!(*n, first.nonce),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&first.nonce), "{err}");
    let st = lab.client.rekey_status().await.unwrap();
    assert_eq!(
        (st.nonce.as_str(), st.shares, st.threshold, st.progress),
        (first.nonce.as_str(), 5, 3, 1),
        "the first rekey is untouched"
    );
}

#[tokio::test]
async fn vault_client_unreachable_address_says_what_to_check() {
    rebox::init_crypto();
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let client = VaultClient::new(&url).unwrap();
    let err = client.seal_status().await.unwrap_err();
    assert!(matches!(err, VaultError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&url), "{msg}");
    assert!(
        err.next().contains("tunnel") && err.next().contains("pod"),
        "{}",
        err.next()
    );

    // Something that accepts but never answers: the deadline turns it into Unreachable.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut conns = vec![];
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let client = VaultClient::builder(format!("http://{addr}"))
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = client.health().await.unwrap_err();
    assert!(matches!(err, VaultError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("time limit"), "{err}");
    hold.abort();
}

/// Serves `reply` (a raw HTTP response) to every connection on a fresh port.
async fn fake_server(reply: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).await;
            let _ = c.write_all(reply.as_bytes()).await;
        }
    });
    (url, task)
}

#[tokio::test]
async fn vault_client_something_else_at_the_address_is_named() {
    rebox::init_crypto();
    let (url, task) = fake_server(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    )
    .await;
    let err = VaultClient::new(&url)
        .unwrap()
        .seal_status()
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Protocol { .. }), "{err:?}");
    assert!(err.next().contains("port"), "{}", err.next());
    task.abort();

    // A non-Vault error page keeps its words instead of being guessed at.
    let (url, task) = fake_server(
        "HTTP/1.1 404 Not Found\r\ncontent-length: 19\r\nconnection: close\r\n\r\n404 page not found\n",
    )
    .await;
    let err = VaultClient::new(&url)
        .unwrap()
        .rekey_status()
        .await
        .unwrap_err();
    match &err {
        VaultError::Other {
            status: 404,
            errors,
        } => assert_eq!(errors, &["404 page not found"]),
        other => panic!("{other:?}"),
    }
    task.abort();
}

/// The process-wide trace buffer (tracing and `log` records from every crate, TRACE level).
fn trace_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        use tracing_subscriber::util::SubscriberInitExt;
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || BufWriter(writer.clone()))
            .finish()
            .try_init()
            .expect("first subscriber in this test binary");
        buf
    })
    .clone()
}

struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for BufWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn vault_client_trace_logs_never_show_a_share_or_token() {
    let buf = trace_buffer();
    let (lab, old, root) = initialised(3, 2).await;
    let (_other, wrong, _) = initialised(3, 2).await;
    let _ = lab
        .client
        .unseal_all(&wrong[..2], |_| {})
        .await
        .unwrap_err();
    lab.client.unseal_all(&old[..2], |_| {}).await.unwrap();
    let new = rekey_to_new_shares(&lab, &old[..2], 2, 2).await;
    let vnonce = new.verification_nonce.clone().unwrap();
    // Two wrong new shares: refused at the verification threshold.
    let _ = lab.client.rekey_verify(&old[0], &vnonce).await.unwrap();
    let _ = lab.client.rekey_verify(&old[1], &vnonce).await.unwrap_err();
    let vnonce = lab.client.rekey_verify_status().await.unwrap().nonce;
    for k in &new.keys {
        let _ = lab.client.rekey_verify(k, &vnonce).await.unwrap();
    }
    let init = lab_init_for_logs().await;

    let logs = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    // The capture works: our request lines and the HTTP stack's own traces are there.
    assert!(
        logs.contains("vault answered"),
        "no rebox::vault lines captured"
    );
    assert!(
        logs.contains("/v1/sys/rekey/verify"),
        "no request paths captured"
    );
    assert!(logs.contains("TRACE"), "no trace-level lines captured");
    let secrets = old
        .iter()
        .chain(&wrong)
        .chain(&new.keys)
        .chain(&new.keys_base64)
        .chain(&init.keys)
        .chain(&init.keys_base64)
        .chain([&root, &init.root_token]);
    for s in secrets {
        // Long enough to be unambiguous; a prefix would be a partial leak too.
        let needle = &s.expose()[..16];
        assert!(
            !logs.contains(needle),
            "a secret reached the logs (starting {}…)",
            &needle[..4]
        );
    }
}

async fn lab_init_for_logs() -> rebox::vault::InitResult {
    let lab = lab().await;
    lab.client.init(3, 2).await.unwrap()
}
