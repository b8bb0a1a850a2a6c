//! The NAS fixture writes Longhorn's backupstore layout, and the Longhorn CRDs the lab
//! generates agree with the real v1.11.3 CRDs (checked when ../shared/crds is present).

use std::path::Path;

use chrono::{TimeZone, Utc};
use rebox_lab::k3s::controllers::longhorn;
use rebox_lab::nas::{self, Backupstore, NasFixture};
use serde_json::Value;
use sha2::{Digest, Sha512};

#[test]
fn nas_fixture_layout_times_labels_and_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Utc.with_ymd_and_hms(2026, 11, 20, 3, 0, 0).unwrap();
    let built = NasFixture::new(tmp.path())
        .volume(
            "vault-data-lh",
            "security",
            "vault-data-lh",
            vec![("vault.db".to_string(), b"{}".to_vec())],
            t,
        )
        .volume(
            "immich-db",
            "media",
            "immich-db",
            &b"db"[..],
            t - chrono::Duration::hours(7),
        )
        .volume(
            "hass-config",
            "home",
            "hass-config",
            &b"cfg"[..],
            t - chrono::Duration::days(2),
        )
        .corrupt("hass-config")
        .build()
        .unwrap();
    let bs = Backupstore::new(tmp.path());
    assert_eq!(
        bs.list_volumes().unwrap(),
        vec!["hass-config", "immich-db", "vault-data-lh"]
    );
    // backupstore/volumes/<cs[0:2]>/<cs[2:4]>/<volume>/volume.cfg, cs = backupstore's
    // util.GetChecksum: hex SHA-512 (its first 64 characters). a709 is the start of
    // `printf vault-data-lh | sha512sum` (sha256 would give 5f44).
    let cfg_path = tmp
        .path()
        .join("backupstore/volumes/a7/09/vault-data-lh/volume.cfg");
    let cfg: Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    assert_eq!(cfg["Name"], "vault-data-lh");
    assert_eq!(
        cfg["Size"],
        (1i64 << 30).to_string(),
        "Size is a string, as Go's `json:\",string\"`"
    );
    assert_eq!(cfg["LastBackupAt"], "2026-11-20T03:00:00Z");
    let b = bs
        .load_backup("vault-data-lh", cfg["LastBackupName"].as_str().unwrap())
        .unwrap();
    let ks: Value = serde_json::from_str(&b.labels["KubernetesStatus"]).unwrap();
    assert_eq!(
        (ks["namespace"].as_str(), ks["pvcName"].as_str()),
        (Some("security"), Some("vault-data-lh"))
    );
    assert!(bs
        .backup_cfg_path("vault-data-lh", &b.name)
        .ends_with(format!("backups/backup_{}.cfg", b.name)));
    let blk = bs
        .read_block("vault-data-lh", &b.blocks[0].block_checksum)
        .unwrap();
    assert_eq!(blk.len(), nas::BLOCK_SIZE);
    // A block is named by the same checksum of its content, 64 hex characters.
    let cs = b.blocks[0].block_checksum.clone();
    assert_eq!(cs, hex::encode(Sha512::digest(&blk))[..64]);
    assert!(bs.block_path("vault-data-lh", &cs).ends_with(format!(
        "blocks/{}/{}/{cs}.blk",
        &cs[0..2],
        &cs[2..4]
    )));
    let files = nas::decode_image(&blk).unwrap();
    assert_eq!(files, vec![("vault.db".to_string(), 0o644, b"{}".to_vec())]);
    assert_eq!(
        built.volume("immich-db").last_backup().created,
        "2026-11-19T20:00:00Z"
    );
    // The corrupt volume's block fails its checksum.
    let h = bs.load_volume("hass-config").unwrap();
    let hb = bs.load_backup("hass-config", &h.last_backup_name).unwrap();
    let err = bs
        .read_block("hass-config", &hb.blocks[0].block_checksum)
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("checksum verification failed"),
        "{err:#}"
    );
    // corrupt_volume does the same to an existing store.
    nas::corrupt_volume(tmp.path(), "immich-db").unwrap();
    let ib = bs
        .load_backup(
            "immich-db",
            &bs.load_volume("immich-db").unwrap().last_backup_name,
        )
        .unwrap();
    assert!(bs
        .read_block("immich-db", &ib.blocks[0].block_checksum)
        .is_err());
}

fn walk_props(prefix: &str, ours: &Value, real: &Value, errs: &mut Vec<String>) {
    if let (Some(t), Some(rt)) = (ours["type"].as_str(), real["type"].as_str()) {
        if t != rt {
            errs.push(format!("{prefix}: type {t} vs upstream {rt}"));
        }
    }
    if ours["enum"] != real["enum"] {
        errs.push(format!(
            "{prefix}: enum {} vs upstream {}",
            ours["enum"], real["enum"]
        ));
    }
    for (k, v) in ours["properties"].as_object().into_iter().flatten() {
        match real["properties"].get(k) {
            Some(r) => walk_props(&format!("{prefix}.{k}"), v, r, errs),
            None => errs.push(format!("{prefix}.{k}: not in the upstream CRD")),
        }
    }
    if ours["items"].is_object() {
        walk_props(&format!("{prefix}[]"), &ours["items"], &real["items"], errs);
    }
}

#[test]
fn longhorn_crds_match_upstream_v1_11_3() {
    let path = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("../../../shared/crds/longhorn-v1.11.3.yaml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("SKIPPED longhorn_crds_match_upstream_v1_11_3: {} not present (only the steering checkout has ../shared/crds)", path.display());
        return;
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let mut errs = vec![];
    for ours in longhorn::longhorn_crds() {
        let name = ours["metadata"]["name"].as_str().unwrap();
        let real = docs
            .iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{name} not upstream"));
        assert_eq!(ours["spec"]["names"]["kind"], real["spec"]["names"]["kind"]);
        assert_eq!(
            ours["spec"]["names"]["shortNames"],
            real["spec"]["names"]["shortNames"]
        );
        assert_eq!(ours["spec"]["scope"], real["spec"]["scope"]);
        let rv = real["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "v1beta2")
            .unwrap();
        assert_eq!(
            rv["subresources"], ours["spec"]["versions"][0]["subresources"],
            "{name} subresources"
        );
        let rs = &rv["schema"]["openAPIV3Schema"];
        let os = &ours["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        walk_props(name, os, rs, &mut errs);
        assert_eq!(os["required"], rs["required"], "{name} required");
        // Every spec field upstream is served by the lab (strict validation must not refuse
        // what Longhorn accepts).
        for k in rs["properties"]["spec"]["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if os["properties"]["spec"]["properties"].get(k).is_none() {
                errs.push(format!(
                    "{name}: upstream spec field {k} missing in the lab's CRD"
                ));
            }
        }
    }
    assert!(
        errs.is_empty(),
        "the lab's Longhorn CRDs differ from upstream:\n{}",
        errs.join("\n")
    );
}
