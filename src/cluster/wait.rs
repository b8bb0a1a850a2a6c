//! Waits on cluster state: watches with a deadline, never sleep loops. On timeout the error
//! says what was awaited, what was last seen, and which command shows more.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::wait::await_condition;
use kube::Api;

use super::Cluster;

/// Whether a Node reports condition Ready=True.
pub fn node_ready(node: Option<&Node>) -> bool {
    node.and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl Cluster {
    /// Waits until the node named `name` is Ready.
    pub async fn wait_node_ready(&self, name: &str, deadline: Duration) -> Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        match tokio::time::timeout(deadline, await_condition(api.clone(), name, node_ready)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!("watching node {name}: {e}")),
            Err(_) => {
                let seen = api.get_opt(name).await.ok().flatten();
                let state = match &seen {
                    None => "the node has not registered".to_string(),
                    Some(n) => format!("its conditions: {}", conditions(n)),
                };
                anyhow::bail!(crate::next::hinted(format!("node {name} is not Ready after {}s ({state})", deadline.as_secs()), format!("on the server, `sudo systemctl status k3s` and `sudo k3s kubectl describe node {name}`")))
            }
        }
    }
}

fn conditions(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| {
            c.iter()
                .map(|c| format!("{}={}", c.type_, c.status))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "none".into())
}
