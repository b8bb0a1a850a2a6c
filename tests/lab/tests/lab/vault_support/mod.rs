//! Shared helpers for the tests that talk to the lab's Vault (OpenBao's `bao`): a thin reqwest client that returns
//! (status, JSON body) for every call, so each test asserts on exactly what Vault would send.
#![allow(dead_code)]

use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

pub struct Vault {
    pub base: String,
    http: reqwest::Client,
}

pub struct Init {
    pub keys: Vec<String>,
    pub keys_base64: Vec<String>,
    pub root_token: String,
}

impl Vault {
    pub fn new(base: impl Into<String>) -> Vault {
        install_crypto();
        Vault {
            base: base.into(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("reqwest client"),
        }
    }

    /// One request; returns the status and the body parsed as JSON (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        let resp = req.send().await.expect("Vault answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None, None).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, Some(body), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body), None).await
    }

    pub async fn delete(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(Method::DELETE, path, body, None).await
    }

    pub async fn status(&self) -> Value {
        let (code, v) = self.get("/v1/sys/seal-status").await;
        assert_eq!(code, 200, "seal-status: {v}");
        v
    }

    pub async fn init(&self, shares: u32, threshold: u32) -> Init {
        let (code, v) = self
            .put(
                "/v1/sys/init",
                json!({"secret_shares": shares, "secret_threshold": threshold}),
            )
            .await;
        assert_eq!(code, 200, "init: {v}");
        let strings = |k: &str| -> Vec<String> {
            v[k].as_array()
                .unwrap_or_else(|| panic!("{k} in {v}"))
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        Init {
            keys: strings("keys"),
            keys_base64: strings("keys_base64"),
            root_token: v["root_token"].as_str().unwrap().to_string(),
        }
    }

    pub async fn unseal(&self, key: &str) -> (u16, Value) {
        self.put("/v1/sys/unseal", json!({ "key": key })).await
    }

    /// Submits every key in turn; asserts each is accepted; returns the last status.
    pub async fn unseal_all(&self, keys: &[String]) -> Value {
        let mut last = Value::Null;
        for k in keys {
            let (code, v) = self.unseal(k).await;
            assert_eq!(code, 200, "unseal: {v}");
            last = v;
        }
        last
    }

    pub async fn seal(&self, token: &str) {
        let (code, v) = self
            .call(Method::PUT, "/v1/sys/seal", None, Some(token))
            .await;
        assert_eq!(code, 204, "seal: {v}");
    }
}

/// `{"errors":[...]}` as strings, asserting the shape.
pub fn errors(v: &Value) -> Vec<String> {
    v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array in {v}"))
        .iter()
        .map(|e| e.as_str().expect("string error").to_string())
        .collect()
}

/// The x-coordinate of a hex share (Vault puts it last).
pub fn x_of(hex_share: &str) -> u8 {
    *hex::decode(hex_share).unwrap().last().unwrap()
}

/// A well-formed random 33-byte share (hex) whose x-coordinate avoids `avoid`.
pub fn forged_share(avoid: &[&str]) -> String {
    use rand::RngCore;
    let xs: Vec<u8> = avoid.iter().map(|s| x_of(s)).collect();
    let mut b = [0u8; 33];
    rand::thread_rng().fill_bytes(&mut b);
    b[32] = (1..=255u8).find(|x| !xs.contains(x)).unwrap();
    hex::encode(b)
}

/// The first share in `pool` whose x-coordinate differs from those of `others`.
pub fn share_with_distinct_x<'a>(pool: &'a [String], others: &[&String]) -> &'a String {
    let xs: Vec<u8> = others.iter().map(|s| x_of(s)).collect();
    pool.iter()
        .find(|s| !xs.contains(&x_of(s)))
        .expect("a share with a distinct x-coordinate")
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Selects rustls' ring provider (see the comment on the rustls dev-dependency).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
