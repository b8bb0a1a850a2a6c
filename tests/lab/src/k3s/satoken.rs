//! Service-account tokens: the JWTs lab-k3s issues (TokenRequest, the kubelet's projected
//! `kube-api-access` token) and checks (bearer authentication, TokenReview).
//!
//! Contract followed: kube-apiserver's service-account token issuer and authenticator
//! (kubernetes `pkg/serviceaccount/claims.go`, `pkg/serviceaccount/jwt.go`,
//! `pkg/registry/core/serviceaccount/storage/token.go`, `pkg/apis/authentication/validation`):
//!
//! - signed with one key made at the first start and kept in the data dir
//!   (`server/tls/service.key`, k3s's file name; ES256 here, k3s uses RS256 — both are in
//!   OpenBao's allowed list, `AllowedJWTSignatureAlgorithmsK8s`); `kid` = the key's hash;
//! - claims as a projected token: `iss` [`ISSUER`] (k3s's default issuer), `sub`
//!   `system:serviceaccount:NS:SA`, `aud` (the request's audiences, else the API audiences
//!   [`API_AUDIENCES`], what k3s passes as `--api-audiences`), `exp`/`iat`/`nbf`, `jti`, and
//!   `kubernetes.io` {`namespace`, `serviceaccount` {name, uid}, `pod` {name, uid}?, `node`?};
//! - TokenRequest: `expirationSeconds` default 3600, < 600 → 422 "may not specify a duration
//!   less than 10 minutes", > 2^32 → 422 "may not specify a duration larger than 2^32
//!   seconds"; the ServiceAccount must exist (404);
//! - validation: signature, issuer, expiry/not-before (no leeway: the lab has one clock),
//!   audience intersection ("token audiences [..] is invalid for the target audiences [..]"),
//!   the ServiceAccount still there with the same uid (`serviceaccounts "x" not found`,
//!   "service account UID (..) does not match claim (..)"), a bound pod still there with the
//!   same uid ("service account token has been invalidated"); the user is
//!   `system:serviceaccount:NS:SA` with the SA's uid and groups `system:serviceaccounts`,
//!   `system:serviceaccounts:NS`, `system:authenticated`, extra `credential-id` (JTI) and
//!   the pod name/uid. Refusals read as kube-apiserver's union authenticator words them:
//!   `[invalid bearer token, <reason>]`.
//!
//! Left out: token expiration extension for kubelet tokens (`--service-account-extend-token-
//! expiration`), Secret-bound tokens, node-bound tokens, the OIDC discovery endpoints
//! (`/.well-known/openid-configuration`, `/openid/v1/jwks`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::store::{write_atomic, Store};

/// k3s's service-account issuer (`--service-account-issuer`).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// k3s's `--api-audiences`: the issuer and `k3s`.
pub const API_AUDIENCES: [&str; 2] = [ISSUER, "k3s"];
/// kube-apiserver's default `expirationSeconds` for a TokenRequest.
pub const DEFAULT_EXPIRATION: i64 = 3600;
/// What the kubelet asks for its projected `kube-api-access` token.
pub const KUBELET_EXPIRATION: i64 = 3607;

struct Signer {
    key: EcdsaKeyPair,
    kid: String,
}

fn signers() -> &'static Mutex<HashMap<PathBuf, Arc<Signer>>> {
    static S: OnceLock<Mutex<HashMap<PathBuf, Arc<Signer>>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

/// The signing key of the lab-k3s whose data dir is `data_dir` (made on first use, 0600).
fn signer(data_dir: &Path) -> anyhow::Result<Arc<Signer>> {
    let mut all = signers().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = all.get(data_dir) {
        return Ok(s.clone());
    }
    let path = data_dir.join("server/tls/service.key");
    let rng = SystemRandom::new();
    let der = match std::fs::read(&path) {
        Ok(pem) => {
            let text = String::from_utf8_lossy(&pem);
            let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
            base64::engine::general_purpose::STANDARD.decode(b64.trim())?
        }
        Err(_) => {
            let doc =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| anyhow::anyhow!("generating the service-account key"))?;
            let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
            let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
            for chunk in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
                pem.push('\n');
            }
            pem.push_str("-----END PRIVATE KEY-----\n");
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d)?;
            }
            write_atomic(&path, pem.as_bytes(), 0o600)?;
            doc.as_ref().to_vec()
        }
    };
    let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let kid = B64.encode(&Sha256::digest(key.public_key().as_ref())[..]);
    let s = Arc::new(Signer { key, kid });
    all.insert(data_dir.to_path_buf(), s.clone());
    Ok(s)
}

/// A pod a token is bound to (the kubelet's tokens are).
#[derive(Clone, Debug)]
pub struct BoundPod {
    pub name: String,
    pub uid: String,
    pub node: Option<String>,
}

/// An issued token and its expiry (unix seconds).
pub struct Issued {
    pub token: String,
    pub expires: i64,
    pub audiences: Vec<String>,
}

/// Why a TokenRequest is refused: (HTTP code, reason, message) as kube-apiserver words it.
#[derive(Debug, Clone)]
pub struct Refused {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Issues a token for ServiceAccount `ns/sa` (TokenRequest semantics, see the module docs).
pub fn issue(
    store: &Store,
    ns: &str,
    sa: &str,
    audiences: &[String],
    expiration: Option<i64>,
    pod: Option<&BoundPod>,
) -> Result<Issued, Refused> {
    let exp_secs = expiration.unwrap_or(DEFAULT_EXPIRATION);
    let invalid = |m: &str| {
        Refused {
        code: 422,
        reason: "Invalid",
        message: format!(
            "TokenRequest.authentication.k8s.io \"{sa}\" is invalid: spec.expirationSeconds: Invalid value: {exp_secs}: {m}"
        ),
    }
    };
    if exp_secs < 600 {
        return Err(invalid("may not specify a duration less than 10 minutes"));
    }
    if exp_secs > 1 << 32 {
        return Err(invalid(
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let Some(obj) = store.lock().get("", "serviceaccounts", ns, sa).cloned() else {
        return Err(Refused {
            code: 404,
            reason: "NotFound",
            message: format!("serviceaccounts \"{sa}\" not found"),
        });
    };
    let internal = |e: anyhow::Error| Refused {
        code: 500,
        reason: "InternalError",
        message: format!("failed to sign token: {e:#}"),
    };
    let signer = signer(&store.data_dir()).map_err(internal)?;
    let auds: Vec<String> = if audiences.is_empty() {
        API_AUDIENCES.iter().map(|s| s.to_string()).collect()
    } else {
        audiences.to_vec()
    };
    let now = unix_now();
    let mut k8s =
        json!({"namespace": ns, "serviceaccount": {"name": sa, "uid": obj["metadata"]["uid"]}});
    if let Some(p) = pod {
        k8s["pod"] = json!({"name": p.name, "uid": p.uid});
        if let Some(n) = &p.node {
            k8s["node"] = json!({"name": n, "uid": ""});
        }
    }
    let claims = json!({
        "aud": auds, "exp": now + exp_secs, "iat": now, "nbf": now, "iss": ISSUER,
        "jti": super::defaults::new_uid(), "kubernetes.io": k8s,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
    });
    let header = json!({"alg": "ES256", "kid": signer.kid});
    let signing_input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let sig = signer
        .key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .map_err(|_| internal(anyhow::anyhow!("ECDSA signing failed")))?;
    Ok(Issued {
        token: format!("{signing_input}.{}", B64.encode(sig.as_ref())),
        expires: now + exp_secs,
        audiences: auds,
    })
}

/// Who a valid token authenticates.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The audiences the token was accepted for (intersection with the wanted ones).
    pub audiences: Vec<String>,
    pub jti: String,
    pub pod: Option<(String, String)>,
}

impl User {
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
    /// The TokenReview `status.user` object.
    pub fn user_info(&self) -> Value {
        let mut extra =
            json!({"authentication.kubernetes.io/credential-id": [format!("JTI={}", self.jti)]});
        if let Some((n, u)) = &self.pod {
            extra["authentication.kubernetes.io/pod-name"] = json!([n]);
            extra["authentication.kubernetes.io/pod-uid"] = json!([u]);
        }
        json!({"username": self.username(), "uid": self.uid,
               "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", self.namespace), "system:authenticated"],
               "extra": extra})
    }
}

/// Validates `token` for `wanted` audiences (empty: the API audiences). Err is the reason in
/// the API server's words (without the `invalid bearer token` prefix, see [`refusal`]).
pub fn review(store: &Store, token: &str, wanted: &[String]) -> Result<User, String> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    // Not a JWT (or not ours): the union authenticator finds no authenticator for it.
    let not_ours = || "token lookup failed".to_string();
    if parts.len() != 3 {
        return Err(not_ours());
    }
    let header: Value = B64
        .decode(parts[0])
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(not_ours)?;
    let claims: Value = B64
        .decode(parts[1])
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(not_ours)?;
    if claims["iss"] != ISSUER {
        return Err(not_ours());
    }
    let signer = signer(&store.data_dir()).map_err(|e| format!("{e:#}"))?;
    let sig = B64.decode(parts[2]).map_err(|_| not_ours())?;
    let public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_FIXED,
        signer.key.public_key().as_ref(),
    );
    if header["alg"] != "ES256"
        || public
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .is_err()
    {
        return Err("square/go-jose: error in cryptographic primitive".into());
    }
    let now = unix_now();
    if claims["exp"].as_i64().is_none_or(|e| now >= e) {
        return Err("service account token has expired".into());
    }
    if claims["nbf"].as_i64().is_some_and(|n| now < n) {
        return Err("service account token is not valid yet".into());
    }
    let token_auds: Vec<String> = match &claims["aud"] {
        Value::String(s) => vec![s.clone()],
        v => v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(String::from))
            .collect(),
    };
    let wanted: Vec<String> = if wanted.is_empty() {
        API_AUDIENCES.iter().map(|s| s.to_string()).collect()
    } else {
        wanted.to_vec()
    };
    let accepted: Vec<String> = token_auds
        .iter()
        .filter(|a| wanted.contains(a))
        .cloned()
        .collect();
    if accepted.is_empty() {
        return Err(format!(
            "token audiences {} is invalid for the target audiences {}",
            go_list(&token_auds),
            go_list(&wanted)
        ));
    }
    let k = &claims["kubernetes.io"];
    let ns = k["namespace"].as_str().unwrap_or_default().to_string();
    let name = k["serviceaccount"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let claim_uid = k["serviceaccount"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let inner = store.lock();
    let sa = inner
        .get("", "serviceaccounts", &ns, &name)
        .cloned()
        .ok_or_else(|| format!("serviceaccounts \"{name}\" not found"))?;
    let uid = sa["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if uid != claim_uid {
        return Err(format!(
            "service account UID ({uid}) does not match claim ({claim_uid})"
        ));
    }
    let pod = match k["pod"]["name"].as_str() {
        None => None,
        Some(pname) => {
            let puid = k["pod"]["uid"].as_str().unwrap_or_default().to_string();
            let live = inner.get("", "pods", &ns, pname).cloned();
            match live {
                Some(p) if p["metadata"]["uid"] == puid.as_str() => Some((pname.to_string(), puid)),
                Some(p) => {
                    return Err(format!(
                        "pod UID ({}) does not match service account pod ref claim ({puid})",
                        p["metadata"]["uid"].as_str().unwrap_or_default()
                    ))
                }
                None => return Err("service account token has been invalidated".into()),
            }
        }
    };
    Ok(User {
        namespace: ns,
        name,
        uid,
        audiences: accepted,
        jti: claims["jti"].as_str().unwrap_or_default().to_string(),
        pod,
    })
}

/// A refusal as TokenReview's `status.error` carries it (the union authenticator's words).
pub fn refusal(reason: &str) -> String {
    format!("[invalid bearer token, {reason}]")
}

/// Go's `%q` of a string slice: `["a" "b"]`.
fn go_list(v: &[String]) -> String {
    let q: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", q.join(" "))
}

/// Whether ServiceAccount `ns/name` may create TokenReviews: bound (ClusterRoleBinding) to
/// the ClusterRole `system:auth-delegator`, the binding vault-helm's `authDelegator` makes.
/// The only RBAC lab-k3s checks (everything else is allowed, see [`super::api`]).
pub fn may_review(store: &Store, ns: &str, name: &str) -> bool {
    store
        .lock()
        .list("rbac.authorization.k8s.io", "clusterrolebindings", None)
        .iter()
        .any(|b| {
            b["roleRef"]["kind"] == "ClusterRole"
                && b["roleRef"]["name"] == "system:auth-delegator"
                && b["subjects"].as_array().into_iter().flatten().any(|s| {
                    (s["kind"] == "ServiceAccount" && s["name"] == name && s["namespace"] == ns)
                        || (s["kind"] == "Group"
                            && (s["name"] == "system:serviceaccounts"
                                || s["name"] == format!("system:serviceaccounts:{ns}").as_str()))
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k3s::admit::{FieldValidation, WriteCtx};
    use crate::k3s::objects;

    fn create(store: &Store, kind: &str, ns: &str, obj: Value) {
        let mut inner = store.lock();
        let rt = inner
            .types
            .iter()
            .find(|t| t.kind == kind && t.crd.is_none())
            .cloned()
            .expect("builtin kind");
        let mut ctx = WriteCtx {
            validation: FieldValidation::Strict,
            warnings: vec![],
            dry_run: false,
            manager: "test".into(),
        };
        objects::create(&mut inner, &rt, ns, obj, &mut ctx)
            .unwrap_or_else(|e| panic!("creating {kind}: {}", e.message));
    }

    /// A store with namespace `apps` and ServiceAccount `apps/app`.
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        create(
            &store,
            "Namespace",
            "",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}),
        );
        if store
            .lock()
            .get("", "serviceaccounts", "apps", "app")
            .is_none()
        {
            create(
                &store,
                "ServiceAccount",
                "apps",
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "apps"}}),
            );
        }
        (dir, store)
    }

    /// Signs `claims` with the store's key (for tokens TokenRequest would never issue).
    fn sign(store: &Store, claims: &Value) -> String {
        let s = signer(&store.data_dir()).unwrap();
        let header = json!({"alg": "ES256", "kid": s.kid});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = s.key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }

    fn claims_of(token: &str) -> Value {
        let p: Vec<&str> = token.split('.').collect();
        serde_json::from_slice(&B64.decode(p[1]).unwrap()).unwrap()
    }

    #[test]
    fn token_request_defaults_to_3600s_and_refuses_short_or_missing_sa() {
        let (_d, store) = store();
        let t = issue(&store, "apps", "app", &[], None, None).unwrap();
        let c = claims_of(&t.token);
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            3600
        );
        assert_eq!(c["sub"], "system:serviceaccount:apps:app");
        assert_eq!(c["iss"], ISSUER);
        assert_eq!(t.audiences, API_AUDIENCES.map(String::from).to_vec());
        let short = issue(&store, "apps", "app", &[], Some(599), None)
            .err()
            .unwrap();
        assert_eq!((short.code, short.reason), (422, "Invalid"));
        assert!(
            short
                .message
                .contains("may not specify a duration less than 10 minutes"),
            "{}",
            short.message
        );
        assert!(issue(&store, "apps", "app", &[], Some(600), None).is_ok());
        let missing = issue(&store, "apps", "nope", &[], None, None)
            .err()
            .unwrap();
        assert_eq!(
            (missing.code, missing.message.as_str()),
            (404, "serviceaccounts \"nope\" not found")
        );
    }

    #[test]
    fn token_review_accepts_a_valid_token_and_refuses_tampered_expired_or_orphaned_ones() {
        let (_d, store) = store();
        let t = issue(&store, "apps", "app", &[], None, None).unwrap();
        let u = review(&store, &t.token, &[]).unwrap();
        assert_eq!(u.username(), "system:serviceaccount:apps:app");
        assert_eq!(
            u.user_info()["groups"],
            json!([
                "system:serviceaccounts",
                "system:serviceaccounts:apps",
                "system:authenticated"
            ])
        );
        // Tampered: claims changed, signature kept.
        let p: Vec<&str> = t.token.split('.').collect();
        let mut c = claims_of(&t.token);
        c["exp"] = json!(c["exp"].as_i64().unwrap() + 3600);
        let forged = format!("{}.{}.{}", p[0], B64.encode(c.to_string()), p[2]);
        assert_eq!(
            review(&store, &forged, &[]).unwrap_err(),
            "square/go-jose: error in cryptographic primitive"
        );
        // Expired (validly signed).
        let mut c = claims_of(&t.token);
        c["exp"] = json!(unix_now() - 1);
        let expired = sign(&store, &c);
        assert_eq!(
            review(&store, &expired, &[]).unwrap_err(),
            "service account token has expired"
        );
        // Another audience than the wanted one.
        let e = review(&store, &t.token, &["vault".into()]).unwrap_err();
        assert!(e.starts_with("token audiences"), "{e}");
        // Not a JWT at all.
        assert_eq!(
            review(&store, "garbage", &[]).unwrap_err(),
            "token lookup failed"
        );
        // The ServiceAccount deleted: its tokens are refused.
        {
            let mut inner = store.lock();
            let rt = inner
                .types
                .iter()
                .find(|t| t.kind == "ServiceAccount")
                .cloned()
                .unwrap();
            objects::delete(&mut inner, &rt, "apps", "app", &Value::Null, false).unwrap();
        }
        assert_eq!(
            review(&store, &t.token, &[]).unwrap_err(),
            "serviceaccounts \"app\" not found"
        );
        assert_eq!(
            refusal("x"),
            "[invalid bearer token, x]",
            "the union authenticator's wording"
        );
    }

    #[test]
    fn token_review_needs_system_auth_delegator() {
        let (_d, store) = store();
        assert!(!may_review(&store, "apps", "app"));
        create(
            &store,
            "ClusterRoleBinding",
            "",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "other"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                   "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "apps"}]}),
        );
        assert!(!may_review(&store, "apps", "app"), "another ClusterRole");
        create(
            &store,
            "ClusterRoleBinding",
            "",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "vault-server-binding"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
                   "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "apps"}]}),
        );
        assert!(may_review(&store, "apps", "app"));
        assert!(!may_review(&store, "apps", "other"), "only the bound SA");
        assert!(
            !may_review(&store, "other", "app"),
            "same name, other namespace"
        );
    }
}
