//! kube-controller-manager's PersistentVolume binder, as far as the lab needs it. Upstream:
//! kubernetes `pkg/controller/volume/persistentvolume/pv_controller.go` (`syncClaim`,
//! `syncVolume`, `bind`); the manager name on its writes is upstream's
//! `persistentvolume-binder`.
//!
//! - A PVC with `spec.volumeName` binds to that PV when the PV is not claimed by another
//!   claim (namespace, name, and uid when the claimRef has one) and storage class, access
//!   modes and size fit: the PV's `claimRef` is set (kept when it already names the claim
//!   with a uid), PV and PVC become `Bound`, the PVC gets the annotation
//!   `pv.kubernetes.io/bind-completed` and `status.accessModes`/`status.capacity` from the PV.
//! - A PVC without `spec.volumeName` binds to the PV a provisioner made for it: annotation
//!   `pv.kubernetes.io/provisioned-by`, `claimRef` naming the claim with its uid (Longhorn's
//!   CSI provisioner in [`super::longhorn`] writes such PVs). The PVC gets `volumeName`, the
//!   PV's storage class, `bind-completed`, `bound-by-controller` and the
//!   `volume.kubernetes.io/storage-provisioner` annotations (and the beta one) naming the
//!   provisioner.
//! - PV phases: `Available` without a claimRef, `Bound` while the claim it names (uid
//!   included) points back at it, `Released` when the claim with that uid is gone.
//!
//! Left out: matching a claim without volumeName to any Available PV by size and class
//! (`findBestMatchForClaim`), asking for provisioning before a PV exists, the
//! `WaitForFirstConsumer` binding mode, reclaim policies (a Released PV stays, whatever its
//! `persistentVolumeReclaimPolicy`), `Lost` claims.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{ops, parse_quantity};
use crate::k3s::store::{Event, Store};

const MANAGER: &str = "persistentvolume-binder";

/// How often the binder looks again without an event: the Longhorn stand-in's tick, which
/// paced the binding while it lived there.
const TICK: Duration = Duration::from_millis(250);

pub async fn run(store: Arc<Store>) {
    let mut rx = store.subscribe();
    let interest = |ev: &Event| {
        ev.group.is_empty()
            && matches!(
                ev.plural.as_str(),
                "persistentvolumes" | "persistentvolumeclaims"
            )
    };
    loop {
        pass(&store);
        if !super::next_pass(&mut rx, TICK, interest).await {
            return;
        }
    }
}

/// One pass over all claims, then all volumes.
fn pass(st: &Store) {
    let pvs = ops::list(st, "", "persistentvolumes", None);
    let pvcs = ops::list(st, "", "persistentvolumeclaims", None);
    for pvc in &pvcs {
        let ns = pvc["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = pvc["metadata"]["name"].as_str().unwrap_or_default();
        if !pvc["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let request = pvc["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .and_then(parse_quantity)
            .unwrap_or(0);
        let class = pvc["spec"]["storageClassName"].as_str().unwrap_or_default();
        match pvc["spec"]["volumeName"].as_str().filter(|s| !s.is_empty()) {
            Some(pv_name) => {
                let Some(pv) = pvs.iter().find(|p| p["metadata"]["name"] == pv_name) else {
                    continue;
                };
                let claim = &pv["spec"]["claimRef"];
                let claimed_by_other = claim.is_object()
                    && (claim["namespace"] != ns
                        || claim["name"] != name
                        || (claim["uid"].is_string() && claim["uid"] != pvc["metadata"]["uid"]));
                let pv_class = pv["spec"]["storageClassName"].as_str().unwrap_or_default();
                let cap = pv["spec"]["capacity"]["storage"]
                    .as_str()
                    .and_then(parse_quantity)
                    .unwrap_or(0);
                let modes_ok = pvc["spec"]["accessModes"].as_array().is_none_or(|m| {
                    m.iter().all(|x| {
                        pv["spec"]["accessModes"]
                            .as_array()
                            .is_some_and(|pm| pm.contains(x))
                    })
                });
                if claimed_by_other || pv_class != class || cap < request || !modes_ok {
                    continue;
                }
                if !claim.is_object() || claim["uid"].is_null() {
                    let c = json!({"kind": "PersistentVolumeClaim", "namespace": ns, "name": name,
                                   "uid": pvc["metadata"]["uid"], "apiVersion": "v1",
                                   "resourceVersion": pvc["metadata"]["resourceVersion"]});
                    let _ = ops::modify(
                        st,
                        "",
                        "persistentvolumes",
                        "",
                        pv_name,
                        None,
                        MANAGER,
                        |o| {
                            o["spec"]["claimRef"] = c;
                            true
                        },
                    );
                }
                let _ = ops::modify(
                    st,
                    "",
                    "persistentvolumes",
                    "",
                    pv_name,
                    Some("status"),
                    MANAGER,
                    |o| {
                        o["status"]["phase"] = json!("Bound");
                        true
                    },
                );
                if pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] != "yes" {
                    let _ = ops::modify(
                        st,
                        "",
                        "persistentvolumeclaims",
                        ns,
                        name,
                        None,
                        MANAGER,
                        |o| {
                            o["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] =
                                json!("yes");
                            true
                        },
                    );
                }
                let modes = pv["spec"]["accessModes"].clone();
                let capacity = pv["spec"]["capacity"].clone();
                let _ = ops::modify(
                    st,
                    "",
                    "persistentvolumeclaims",
                    ns,
                    name,
                    Some("status"),
                    MANAGER,
                    |o| {
                        o["status"]["phase"] = json!("Bound");
                        o["status"]["accessModes"] = modes;
                        o["status"]["capacity"] = capacity;
                        true
                    },
                );
            }
            None => {
                // Only a PV provisioned for this very claim (uid included): a claim without
                // volumeName is never matched to other Available PVs (left out above).
                let uid = &pvc["metadata"]["uid"];
                let Some(pv) = pvs.iter().find(|p| {
                    let c = &p["spec"]["claimRef"];
                    p["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"].is_string()
                        && uid.is_string()
                        && c["namespace"] == ns
                        && c["name"] == name
                        && c["uid"] == *uid
                }) else {
                    continue;
                };
                let pv_name = pv["metadata"]["name"].clone();
                let pv_class = pv["spec"]["storageClassName"].clone();
                let provisioner =
                    pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"].clone();
                let _ = ops::modify(
                    st,
                    "",
                    "persistentvolumeclaims",
                    ns,
                    name,
                    None,
                    MANAGER,
                    |o| {
                        o["spec"]["volumeName"] = pv_name;
                        // The lab has no DefaultStorageClass admission: a claim that named
                        // no class gets the provisioned PV's (the default class) here.
                        if pv_class.is_string() {
                            o["spec"]["storageClassName"] = pv_class;
                        }
                        let a = &mut o["metadata"]["annotations"];
                        a["pv.kubernetes.io/bind-completed"] = json!("yes");
                        a["pv.kubernetes.io/bound-by-controller"] = json!("yes");
                        a["volume.kubernetes.io/storage-provisioner"] = provisioner.clone();
                        a["volume.beta.kubernetes.io/storage-provisioner"] = provisioner;
                        true
                    },
                );
            }
        }
    }
    // PVs: Available without a claim, Released when the claim is gone.
    for pv in ops::list(st, "", "persistentvolumes", None) {
        let name = pv["metadata"]["name"].as_str().unwrap_or_default();
        let claim = &pv["spec"]["claimRef"];
        let phase = if !claim.is_object() {
            "Available"
        } else {
            let ns = claim["namespace"].as_str().unwrap_or_default();
            let cn = claim["name"].as_str().unwrap_or_default();
            match ops::get(st, "", "persistentvolumeclaims", ns, cn) {
                Some(c) if claim["uid"].is_null() || c["metadata"]["uid"] == claim["uid"] => {
                    if c["spec"]["volumeName"] == name {
                        "Bound"
                    } else {
                        continue;
                    }
                }
                Some(_) | None if claim["uid"].is_null() => continue,
                _ => "Released",
            }
        };
        if pv["status"]["phase"] != phase {
            let _ = ops::modify(
                st,
                "",
                "persistentvolumes",
                "",
                name,
                Some("status"),
                MANAGER,
                |o| {
                    o["status"]["phase"] = json!(phase);
                    true
                },
            );
        }
    }
}
