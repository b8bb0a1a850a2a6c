//! Fidelity tests of lab-vault's seal lifecycle against Vault's contract
//! (`../shared/reference/platform-facts.md` §1: seal-status, unseal, init, seal, health,
//! general wire rules). Each test drives the HTTP API with reqwest.

mod vault_support;

use reqwest::Method;
use serde_json::json;
use vault_support::{errors, forged_share, Vault};

async fn fresh() -> (tempfile::TempDir, rebox_lab::vault::Running, Vault) {
    let dir = tempfile::tempdir().unwrap();
    let running = rebox_lab::vault::start(dir.path().to_path_buf())
        .await
        .unwrap();
    let vault = Vault::new(running.url());
    (dir, running, vault)
}

#[tokio::test]
async fn vault_unseal_3_of_5_reports_progress_then_unseals() {
    let (_d, _r, v) = fresh().await;
    let init = v.init(5, 3).await;
    assert_eq!(init.keys.len(), 5);
    assert_eq!(init.keys_base64.len(), 5);
    assert!(init.root_token.starts_with("hvs."));
    // hex and base64 are the same 33-byte shares
    for (h, b) in init.keys.iter().zip(&init.keys_base64) {
        assert_eq!(h.len(), 66);
        assert_eq!(vault_support::b64(&hex::decode(h).unwrap()), *b);
    }

    let s = v.status().await;
    assert_eq!(s["type"], "shamir");
    assert_eq!(s["initialized"], true);
    assert_eq!(s["sealed"], true);
    assert_eq!((s["t"].as_u64(), s["n"].as_u64()), (Some(3), Some(5)));
    assert_eq!(s["progress"], 0);
    assert_eq!(s["nonce"], "");

    let (code, s1) = v.unseal(&init.keys[0]).await;
    assert_eq!(code, 200);
    assert_eq!(
        (s1["sealed"].clone(), s1["progress"].clone()),
        (json!(true), json!(1))
    );
    let nonce = s1["nonce"].as_str().unwrap().to_string();
    assert!(!nonce.is_empty(), "an unseal attempt has a nonce");

    // second share in base64 form, through POST (a synonym of PUT)
    let (code, s2) = v
        .post("/v1/sys/unseal", json!({"key": init.keys_base64[3]}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(s2["progress"], 2);
    assert_eq!(s2["sealed"], true);
    assert_eq!(s2["nonce"], nonce.as_str(), "same attempt, same nonce");

    let (code, s3) = v.unseal(&init.keys[4]).await;
    assert_eq!(code, 200);
    assert_eq!(s3["sealed"], false);
    assert_eq!(s3["progress"], 0);
    assert_eq!(s3["nonce"], "");
    assert!(s3["cluster_id"].as_str().is_some_and(|c| !c.is_empty()));

    // a share given to an unsealed vault: 200, still unsealed
    let (code, s4) = v.unseal(&init.keys[1]).await;
    assert_eq!(code, 200);
    assert_eq!(s4["sealed"], false);
}

#[tokio::test]
async fn vault_unseal_duplicate_share_does_not_advance_progress() {
    let (_d, _r, v) = fresh().await;
    let init = v.init(5, 3).await;
    assert_eq!(v.unseal(&init.keys[0]).await.1["progress"], 1);
    // same share again, also in its base64 spelling: ignored, 200
    let (code, s) = v.unseal(&init.keys[0]).await;
    assert_eq!(code, 200);
    assert_eq!(s["progress"], 1);
    let (code, s) = v.unseal(&init.keys_base64[0]).await;
    assert_eq!(code, 200);
    assert_eq!(s["progress"], 1);
    assert_eq!(v.unseal(&init.keys[1]).await.1["progress"], 2);
    let s = v.unseal_all(&init.keys[2..3]).await;
    assert_eq!(s["sealed"], false);
}

#[tokio::test]
async fn vault_unseal_reset_clears_progress() {
    let (_d, _r, v) = fresh().await;
    let init = v.init(5, 3).await;
    v.unseal_all(&init.keys[0..2]).await;
    assert_eq!(v.status().await["progress"], 2);
    // reset wins over a key given alongside it
    let (code, s) = v
        .put(
            "/v1/sys/unseal",
            json!({"reset": true, "key": init.keys[2]}),
        )
        .await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["progress"], 0);
    assert_eq!(s["nonce"], "");
    assert_eq!(s["sealed"], true);
    // the next share starts a new attempt
    let (_, s) = v.unseal(&init.keys[2]).await;
    assert_eq!(s["progress"], 1);
    assert_eq!(s["sealed"], true);
    let s = v.unseal_all(&init.keys[3..5]).await;
    assert_eq!(s["sealed"], false);
    // reset on an unsealed vault is refused
    let (code, e) = v.put("/v1/sys/unseal", json!({"reset": true})).await;
    assert_eq!(code, 400);
    assert_eq!(errors(&e), vec!["vault is unsealed"]);
}

#[tokio::test]
async fn vault_unseal_wrong_key_fails_resets_progress_and_stays_sealed() {
    let (_d, _r, v) = fresh().await;
    let init = v.init(5, 3).await;
    v.unseal_all(&init.keys[0..2]).await;
    let wrong = forged_share(&[&init.keys[0], &init.keys[1]]);
    let (code, e) = v.unseal(&wrong).await;
    assert_eq!(code, 400, "{e}");
    let msg = errors(&e).join(" ");
    assert!(msg.contains("message authentication failed"), "{msg}");
    let s = v.status().await;
    assert_eq!(s["sealed"], true);
    assert_eq!(s["progress"], 0, "a failed attempt is discarded");
    assert_eq!(s["nonce"], "");

    // genuine shares of ANOTHER vault are just as wrong
    let (_d2, _r2, other) = fresh().await;
    let other_init = other.init(5, 3).await;
    v.unseal_all(&other_init.keys[0..2]).await;
    let (code, e) = v.unseal(&other_init.keys[2]).await;
    assert_eq!(code, 400, "{e}");
    assert!(errors(&e)
        .join(" ")
        .contains("message authentication failed"));
    assert_eq!(v.status().await["sealed"], true);

    // and the right shares still work afterwards
    let s = v.unseal_all(&init.keys[2..5]).await;
    assert_eq!(s["sealed"], false);
}

#[tokio::test]
async fn vault_unseal_malformed_or_missing_key_is_400() {
    let (_d, _r, v) = fresh().await;
    let init = v.init(5, 3).await;
    v.unseal(&init.keys[0]).await;

    let (code, e) = v.unseal("this is not a key!").await;
    assert_eq!(code, 400);
    assert_eq!(
        errors(&e),
        vec!["'key' must be a valid hex or base64 string"]
    );

    let (code, e) = v.put("/v1/sys/unseal", json!({})).await;
    assert_eq!(code, 400);
    assert_eq!(
        errors(&e),
        vec!["'key' must be specified in request body as JSON, or 'reset' set to true"]
    );

    // valid base64, but far too short for a share
    let (code, e) = v.unseal("AAAA").await;
    assert_eq!(code, 400);
    assert_eq!(
        errors(&e),
        vec!["invalid key: key is shorter than minimum 16 bytes"]
    );

    let (code, _) = v.put("/v1/sys/unseal", json!({"key": 12})).await;
    assert_eq!(code, 400, "a wrongly typed field is refused");

    // none of these counted as a share
    assert_eq!(v.status().await["progress"], 1);
}

#[tokio::test]
async fn vault_init_refuses_second_init_and_bad_thresholds() {
    let (_d, _r, v) = fresh().await;
    let (code, b) = v.get("/v1/sys/init").await;
    assert_eq!((code, b), (200, json!({"initialized": false})));
    let s = v.status().await;
    assert_eq!(
        (
            s["initialized"].clone(),
            s["sealed"].clone(),
            s["t"].clone(),
            s["n"].clone()
        ),
        (json!(false), json!(true), json!(0), json!(0))
    );

    for (body, msg) in [
        (
            json!({"secret_shares": 5, "secret_threshold": 6}),
            "invalid seal configuration: threshold cannot be larger than shares",
        ),
        (
            json!({"secret_shares": 3, "secret_threshold": 1}),
            "invalid seal configuration: threshold must be greater than one for multiple shares",
        ),
        (
            json!({}),
            "invalid seal configuration: shares must be at least one",
        ),
        (
            json!({"secret_shares": 300, "secret_threshold": 3}),
            "invalid seal configuration: shares must be less than 256",
        ),
    ] {
        let (code, e) = v.put("/v1/sys/init", body.clone()).await;
        assert_eq!(code, 400, "{body}: {e}");
        assert_eq!(errors(&e), vec![msg], "{body}");
    }
    // PGP-encrypted shares are refused, clearly
    let (code, e) = v
        .put(
            "/v1/sys/init",
            json!({"secret_shares": 2, "secret_threshold": 2, "pgp_keys": ["a", "b"]}),
        )
        .await;
    assert_eq!(code, 400);
    assert!(errors(&e)[0].contains("pgp_keys"), "{e}");
    assert_eq!(v.get("/v1/sys/init").await.1["initialized"], false);

    let init = v.init(5, 3).await;
    let (code, e) = v
        .put(
            "/v1/sys/init",
            json!({"secret_shares": 5, "secret_threshold": 3}),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(errors(&e), vec!["Vault is already initialized"]);
    assert_eq!(v.get("/v1/sys/init").await.1["initialized"], true);
    // the refused second init changed nothing: the first keys still open it
    assert_eq!(v.unseal_all(&init.keys[0..3]).await["sealed"], false);
}

#[tokio::test]
async fn vault_init_single_share_unseals_at_once() {
    let (_d, _r, v) = fresh().await;
    let init = v.init(1, 1).await;
    assert_eq!(init.keys.len(), 1);
    assert_eq!(
        init.keys[0].len(),
        64,
        "a 1-of-1 key is the 32-byte key itself"
    );
    let (code, s) = v.unseal(&init.keys_base64[0]).await;
    assert_eq!(code, 200);
    assert_eq!(s["sealed"], false);
}

#[tokio::test]
async fn vault_endpoints_answer_503_while_sealed() {
    let (_d, _r, v) = fresh().await;
    // uninitialised: health says 501, unseal says not initialised
    let (code, h) = v.get("/v1/sys/health").await;
    assert_eq!(code, 501);
    assert_eq!(h["initialized"], false);
    let (code, e) = v.unseal(&"ab".repeat(33)).await;
    assert_eq!(code, 400);
    assert_eq!(errors(&e), vec!["Vault is not initialized"]);

    let init = v.init(3, 2).await;
    for (method, path) in [
        (Method::GET, "/v1/sys/rekey/init"),
        (Method::PUT, "/v1/sys/rekey/init"),
        (Method::PUT, "/v1/sys/rekey/update"),
        (Method::GET, "/v1/sys/rekey/verify"),
        (Method::DELETE, "/v1/sys/rekey/init"),
        (Method::GET, "/v1/secret/data/app"),
        (Method::GET, "/v1/sys/mounts"),
    ] {
        let body = match method {
            Method::PUT => Some(
                json!({"secret_shares": 3, "secret_threshold": 2, "key": init.keys[0], "nonce": "x"}),
            ),
            _ => None,
        };
        let (code, e) = v
            .call(method.clone(), path, body, Some(&init.root_token))
            .await;
        assert_eq!(code, 503, "{method} {path}: {e}");
        assert_eq!(e, json!({"errors": ["Vault is sealed"]}), "{method} {path}");
    }
    let (code, h) = v.get("/v1/sys/health").await;
    assert_eq!(code, 503);
    assert_eq!(
        (h["initialized"].clone(), h["sealed"].clone()),
        (json!(true), json!(true))
    );
    let (code, _) = v.call(Method::HEAD, "/v1/sys/health", None, None).await;
    assert_eq!(code, 503);
    let (code, _) = v.get("/v1/sys/health?sealedcode=200").await;
    assert_eq!(code, 200, "sealedcode overrides the sealed status code");
    let (code, _) = v.get("/v1/sys/health?sealedcode=abc").await;
    assert_eq!(code, 400);

    v.unseal_all(&init.keys[0..2]).await;
    let (code, h) = v.get("/v1/sys/health").await;
    assert_eq!(code, 200);
    assert_eq!(h["sealed"], false);
    assert_eq!(
        v.call(Method::HEAD, "/v1/sys/health", None, None).await.0,
        200
    );
    let (code, r) = v.get("/v1/sys/rekey/init").await;
    assert_eq!(code, 200, "rekey status needs no token once unsealed: {r}");
}

#[tokio::test]
async fn vault_seal_requires_the_root_token() {
    let (_d, _r, v) = fresh().await;
    let init = v.init(3, 2).await;
    v.unseal_all(&init.keys[0..2]).await;

    let (code, e) = v.call(Method::PUT, "/v1/sys/seal", None, None).await;
    assert_eq!(code, 403);
    assert_eq!(errors(&e), vec!["permission denied"]);
    let (code, _) = v
        .call(
            Method::PUT,
            "/v1/sys/seal",
            None,
            Some("hvs.notarealtoken0000000000"),
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(v.status().await["sealed"], false);

    // Authorization: Bearer is accepted like X-Vault-Token
    vault_support::install_crypto();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/sys/seal", v.base))
        .bearer_auth(&init.root_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(v.status().await["sealed"], true);

    // sealing a sealed vault is a no-op
    v.seal(&init.root_token).await;
    v.unseal_all(&init.keys[1..3]).await;
    v.seal(&init.root_token).await;
    assert_eq!(v.status().await["sealed"], true);

    // lab-only fault switch (not Vault API): seal without a token, like a restarted pod
    v.unseal_all(&init.keys[0..2]).await;
    let (code, _) = v.post("/lab/seal", json!({})).await;
    assert_eq!(code, 204);
    assert_eq!(v.status().await["sealed"], true);
}

#[tokio::test]
async fn vault_unknown_paths_404_and_wrong_methods_405() {
    let (_d, _r, v) = fresh().await;
    let init = v.init(3, 2).await;
    for (method, path) in [
        (Method::GET, "/v1/sys/unseal"),
        (Method::DELETE, "/v1/sys/seal-status"),
        (Method::POST, "/v1/sys/health"),
        (Method::GET, "/v1/sys/seal"),
        (Method::PATCH, "/v1/sys/rekey/init"),
        (Method::GET, "/v1/sys/rekey/update"),
    ] {
        let (code, e) = v.call(method.clone(), path, None, None).await;
        assert_eq!(code, 405, "{method} {path}");
        assert_eq!(e, json!({"errors": []}), "{method} {path}");
    }
    assert_eq!(v.get("/nothing/here").await.0, 404);

    v.unseal_all(&init.keys[0..2]).await;
    let (code, e) = v.get("/v1/secret/data/app").await;
    assert_eq!(code, 403, "no token: {e}");
    let (code, e) = v
        .call(
            Method::GET,
            "/v1/no/such/mount",
            None,
            Some(&init.root_token),
        )
        .await;
    assert_eq!(code, 404, "{e}");
    assert!(!errors(&e).is_empty());
}
