//! The integration tests in one binary (one link of the crate and the lab instead of one per
//! file): each module drives the real `rebox` binary, most of them against lab servers.

mod common;
mod doctor_support;
mod key_support;
mod manifests_support;

mod cli_config;
mod doctor_lab;
mod doctor_unseal;
mod key_bad_input;
mod key_cluster;
mod key_interop;
mod key_roundtrip;
mod key_secrecy;
mod manifests_lab_apply;
mod manifests_render;
mod manifests_scripts;
mod manifests_snapshots;
mod rebuild_download;
mod rebuild_key_safety;
mod rebuild_lab;
mod rebuild_plan_snapshot;
mod rebuild_resume;
mod restore_lab;
mod restore_longhorn;
mod rotate_lab;
mod ssh_auth;
mod ssh_preflight;
mod ssh_transport;
mod status_lab;
mod vault_admin;
mod vault_client;
