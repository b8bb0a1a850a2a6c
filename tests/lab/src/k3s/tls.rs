//! TLS for lab-k3s: a CA, the API server's serving certificate and an admin client
//! certificate, persisted in the data dir under `server/tls/` with k3s's file names.
//!
//! Contract followed: k3s's layout (`server-ca.crt/.key`, `serving-kube-apiserver.crt/.key`,
//! `client-admin.crt/.key`) and the API server's authentication by client certificate
//! (CN `system:admin`, O `system:masters`, as in k3s's kubeconfig). rustls with the ring
//! provider only; clients without a certificate are let through the handshake and answered
//! 401 by the HTTP layer, as kube-apiserver does.
//! Left out: the other k3s CAs (etcd, request-header, kubelet), certificate rotation.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::store::write_atomic;

/// Everything a kubeconfig and the TLS listener need, as PEM.
pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

const CA_CN: &str = "k3s-server-ca";

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, CA_CN);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2034, 1, 1);
    Ok(p)
}

/// Loads the CA (creating it on first start), then issues a fresh serving certificate for
/// `sans` (plus 127.0.0.1 and localhost) and, if absent, the admin client certificate.
pub fn load_or_create(data_dir: &Path, sans: &[String]) -> anyhow::Result<Pki> {
    let dir = data_dir.join("server/tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_crt, ca_key) = (dir.join("server-ca.crt"), dir.join("server-ca.key"));
    if !ca_crt.exists() || !ca_key.exists() {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write_atomic(&ca_key, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&ca_crt, cert.pem().as_bytes(), 0o644)?;
    }
    let ca_pem = std::fs::read_to_string(&ca_crt)?;
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key)?)
        .context("reading server/tls/server-ca.key")?;
    let issuer = Issuer::new(ca_params()?, ca_key);

    let mut names = vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes".into(),
    ];
    // k3s's serving certificate also names the `kubernetes` Service's ClusterIP (the first
    // address of the service CIDR 10.43.0.0/16) and the cluster-local name, which pods use.
    names.extend([
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
        "10.43.0.1".into(),
    ]);
    names.extend(sans.iter().cloned());
    names.dedup();
    let mut sp = CertificateParams::new(Vec::<String>::new())?;
    for n in &names {
        sp.subject_alt_names
            .push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into()?),
            });
    }
    sp.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sp.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let skey = KeyPair::generate()?;
    let scert = sp.signed_by(&skey, &issuer)?;
    write_atomic(
        &dir.join("serving-kube-apiserver.crt"),
        scert.pem().as_bytes(),
        0o644,
    )?;
    write_atomic(
        &dir.join("serving-kube-apiserver.key"),
        skey.serialize_pem().as_bytes(),
        0o600,
    )?;

    let (cl_crt, cl_key) = (dir.join("client-admin.crt"), dir.join("client-admin.key"));
    if !cl_crt.exists() || !cl_key.exists() {
        let mut cp = CertificateParams::new(Vec::<String>::new())?;
        cp.distinguished_name
            .push(DnType::CommonName, "system:admin");
        cp.distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        cp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let ckey = KeyPair::generate()?;
        let ccert = cp.signed_by(&ckey, &issuer)?;
        write_atomic(&cl_key, ckey.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&cl_crt, ccert.pem().as_bytes(), 0o644)?;
    }
    Ok(Pki {
        ca_pem,
        server_cert_pem: scert.pem(),
        server_key_pem: skey.serialize_pem(),
        client_cert_pem: std::fs::read_to_string(&cl_crt)?,
        client_key_pem: std::fs::read_to_string(&cl_key)?,
    })
}

/// A rustls server config (ring provider) that asks for, but does not require, a client
/// certificate signed by the CA; h2 and http/1.1 by ALPN.
pub fn server_config(pki: &Pki) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let chain = CertificateDer::pem_slice_iter(pki.server_cert_pem.as_bytes())
        .chain(CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes())?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
