//! The first steps of the recovery sequence: the k3s API answers and the node is Ready.

use super::{check, kubectl, ts, unreadable};
use crate::doctor::snapshot::Snapshot;
use crate::doctor::{Check, Verdict};

pub(super) fn api(s: &Snapshot) -> Check {
    const T: &str = "k3s API";
    match &s.api {
        Ok(v) => check("k3s-api", T, Verdict::Ok, format!("up, {v}")),
        Err(e) => check("k3s-api", T, Verdict::Fail, format!("does not answer: {e}"))
            .with_fix(
                "k3s is not serving its API: look at its service and log on the server; it restarts itself after a reboot (Restart=always)",
                vec![
                    "sudo systemctl status k3s".into(),
                    "sudo journalctl -u k3s -n 50".into(),
                    "sudo systemctl restart k3s".into(),
                ],
                None,
            ),
    }
}

pub(super) fn node(s: &Snapshot) -> Check {
    const T: &str = "node Ready";
    let nodes = match &s.nodes {
        Ok(n) => n,
        Err(e) => return unreadable("node", T, s, "the nodes", e),
    };
    if nodes.is_empty() {
        return check("node", T, Verdict::Fail, "no node has registered".into()).with_fix(
            "k3s registers its node shortly after it starts; look at k3s's log",
            vec!["sudo journalctl -u k3s -n 50".into()],
            None,
        );
    }
    let mut bad = vec![];
    let mut good = vec![];
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        match ready {
            Some(c) if c.status == "True" => good.push(format!(
                "{name} Ready{}",
                c.last_transition_time
                    .as_ref()
                    .map(|t| format!(" since {}", ts(t)))
                    .unwrap_or_default()
            )),
            Some(c) => bad.push(format!(
                "{name}: Ready={} ({}: {})",
                c.status,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )),
            None => bad.push(format!("{name}: no Ready condition yet")),
        }
    }
    if bad.is_empty() {
        check("node", T, Verdict::Ok, good.join(", "))
    } else {
        let first = nodes[0].metadata.name.clone().unwrap_or_default();
        check(
            "node",
            T,
            Verdict::Fail,
            format!("not Ready: {}", bad.join("; ")),
        )
        .with_evidence(bad.clone())
        .with_fix(
            "the kubelet in k3s reports the node; look at its conditions and k3s's log",
            vec![
                kubectl(format!("describe node {first}")),
                "sudo journalctl -u k3s -n 50".into(),
            ],
            None,
        )
    }
}
