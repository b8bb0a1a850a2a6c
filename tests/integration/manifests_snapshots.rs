//! Snapshots (insta) of everything rendered with the default config: each manifest's YAML, the
//! k3s unit and config, and an outline (groups, objects, inputs) so a change to any rendered
//! file shows up in review. Update with `cargo insta review` (or INSTA_UPDATE=always).

use rebox::config::Config;
use rebox::manifests::{self, RenderInputs};
use serde_json::{json, Value};

#[test]
fn manifests_snapshot_default_yaml() {
    let rendered = manifests::render_all(&Config::default(), &RenderInputs::online()).unwrap();
    for m in &rendered {
        let name = format!("manifests_{}", m.name.replace('/', "_"));
        insta::assert_snapshot!(name, m.yaml);
    }
}

#[test]
fn manifests_snapshot_default_outline() {
    let rendered = manifests::render_all(&Config::default(), &RenderInputs::online()).unwrap();
    let outline: Vec<Value> = rendered
        .iter()
        .map(|m| {
            json!({
                "group": m.group.name(),
                "name": m.name,
                "on_restore_path": m.group.on_restore_path(),
                "objects": m.objects.iter().map(|o| format!(
                    "{} {} {}",
                    o["apiVersion"].as_str().unwrap(),
                    o["kind"].as_str().unwrap(),
                    match o["metadata"]["namespace"].as_str() {
                        Some(ns) => format!("{ns}/{}", o["metadata"]["name"].as_str().unwrap()),
                        None => o["metadata"]["name"].as_str().unwrap().to_string(),
                    }
                )).collect::<Vec<_>>(),
                "secret_inputs": m.secret_inputs,
                "missing_config": m.missing_config,
            })
        })
        .collect();
    insta::assert_yaml_snapshot!("manifests_outline", outline);
}

#[test]
fn manifests_snapshot_default_k3s_files() {
    let c = Config::default();
    insta::assert_snapshot!(
        "manifests_k3s_service",
        manifests::render_k3s_unit(&c).unwrap()
    );
    insta::assert_snapshot!(
        "manifests_k3s_config_yaml",
        manifests::render_k3s_config(&c).unwrap()
    );
}
