//! The lab's tests in one binary (one link of the lab crate instead of one per file).

mod k3s_support;
mod nas_support;
mod vault_support;

mod argocd_apps;
mod controllers_crds;
mod controllers_helm;
mod controllers_jobs;
mod controllers_vault;
mod eso_store;
mod eso_webhook;
mod faults_switches;
mod k3s_crds;
mod k3s_kube;
mod k3s_kubectl;
mod k3s_rules;
mod longhorn_restore;
mod nas_fixture;
mod server_cleanup;
mod server_ssh;
mod server_systemd;
mod vault_k8s_auth;
mod vault_restart;
