//! rebox: rebuild a destroyed single-node k3s homelab from a laptop, over SSH.
//!
//! The binary (`main.rs`) is a thin shell around [`commands::run`]; the modules are public so
//! integration tests can drive the SSH layer directly where the CLI cannot reach (e.g. cutting
//! an upload at a chosen byte).

pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod doctor;
pub mod embedded;
pub mod failpoint;
pub mod flow;
pub mod keys;
pub mod manifests;
pub mod next;
pub mod preflight;
pub mod rebuild;
pub mod remote;
pub mod restore;
pub mod rotate;
pub mod secret;
pub mod shield;
pub mod site;
pub mod ui;
pub mod vault;

/// Selects rustls' ring provider for the whole process (kube and reqwest use the default
/// provider; two compiled-in providers would make rustls panic). Call first thing.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
