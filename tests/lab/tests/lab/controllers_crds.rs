//! Controllers (issue 5): the CRDs the lab generates from its own typed structs
//! (`controllers::crds`) cross-checked against the upstream CRDs in `../shared/crds` when
//! present (SKIPPED, loudly, otherwise): names, scope, versions, subresources, and every
//! property we declare exists upstream with the same type, enum and default, with no
//! `required` upstream lacks. HelmChart/HelmChartConfig must match upstream's properties
//! exactly (k3s serves them to everyone); ESO and Argo CD are declared subsets.

use std::collections::BTreeMap;
use std::path::Path;

use rebox_lab::k3s::controllers::crds;
use serde_json::Value;

fn upstream(file: &str) -> Option<Vec<Value>> {
    let p = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("../../../shared/crds")
        .join(file);
    if !p.exists() {
        eprintln!(
            "SKIPPED: {} is missing; the generated CRDs are not cross-checked against upstream",
            p.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(&p).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("upstream CRD parses");
    Some(
        docs.into_iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .collect(),
    )
}

/// path → (type, enum, default, required, int-or-string, preserve-unknown-fields)
fn props(s: &Value, path: &str, out: &mut BTreeMap<String, Value>) {
    let mut req: Vec<String> = s["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    req.sort();
    out.insert(
        path.to_string(),
        serde_json::json!({"type": s["type"], "enum": s["enum"], "default": s["default"], "required": req,
                           "int-or-string": s["x-kubernetes-int-or-string"], "preserve": s["x-kubernetes-preserve-unknown-fields"]}),
    );
    for (k, v) in s["properties"].as_object().into_iter().flatten() {
        props(v, &format!("{path}.{k}"), out);
    }
    if s["items"].is_object() {
        props(&s["items"], &format!("{path}[]"), out);
    }
    if s["additionalProperties"].is_object() {
        props(&s["additionalProperties"], &format!("{path}{{}}"), out);
    }
}

fn version<'a>(crd: &'a Value, v: &str) -> &'a Value {
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == v)
        .unwrap_or_else(|| panic!("no version {v} in {}", crd["metadata"]["name"]))
}

fn check(ours: &Value, file: &str, exact: bool) {
    let Some(up) = upstream(file) else { return };
    let name = ours["metadata"]["name"].as_str().unwrap();
    let theirs = up
        .iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{file} has no CRD {name}"));
    assert_eq!(ours["spec"]["group"], theirs["spec"]["group"]);
    assert_eq!(
        ours["spec"]["scope"], theirs["spec"]["scope"],
        "{name} scope"
    );
    for k in ["kind", "plural", "singular", "listKind"] {
        assert_eq!(
            ours["spec"]["names"][k], theirs["spec"]["names"][k],
            "{name} names.{k}"
        );
    }
    for ov in ours["spec"]["versions"].as_array().unwrap() {
        let v = ov["name"].as_str().unwrap();
        let tv = version(theirs, v);
        assert_eq!(ov["served"], tv["served"], "{name}/{v} served");
        assert_eq!(
            ov["subresources"].is_object() && !ov["subresources"]["status"].is_null(),
            tv["subresources"].is_object() && !tv["subresources"]["status"].is_null(),
            "{name}/{v} status subresource"
        );
        let (mut o, mut t) = (BTreeMap::new(), BTreeMap::new());
        props(&ov["schema"]["openAPIV3Schema"], "", &mut o);
        props(&tv["schema"]["openAPIV3Schema"], "", &mut t);
        for (path, ours_p) in &o {
            // Status is free-form where this crate's controllers own it.
            if path.starts_with(".status") && ours_p["preserve"] == true {
                continue;
            }
            let theirs_p = t
                .get(path)
                .unwrap_or_else(|| panic!("{name}/{v}: we declare {path:?}, upstream does not"));
            for k in ["type", "enum", "default", "int-or-string", "preserve"] {
                assert_eq!(
                    ours_p[k], theirs_p[k],
                    "{name}/{v} {path:?}: {k} differs (ours {ours_p}, upstream {theirs_p})"
                );
            }
            let ours_req: Vec<&Value> = ours_p["required"].as_array().unwrap().iter().collect();
            for r in &ours_req {
                assert!(
                    theirs_p["required"].as_array().unwrap().contains(r),
                    "{name}/{v} {path:?}: we require {r}, upstream does not"
                );
            }
        }
        if exact {
            let missing: Vec<&String> = t
                .keys()
                .filter(|p| !o.contains_key(*p) && !p.starts_with(".metadata."))
                .collect();
            assert!(
                missing.is_empty(),
                "{name}/{v}: upstream declares {missing:?}, we do not"
            );
            for (path, theirs_p) in &t {
                if let Some(ours_p) = o.get(path) {
                    assert_eq!(
                        ours_p["required"], theirs_p["required"],
                        "{name}/{v} {path:?}: required differs"
                    );
                }
            }
        }
        let cols = |v: &Value| -> Vec<(Value, Value)> {
            v["additionalPrinterColumns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| (c["name"].clone(), c["jsonPath"].clone()))
                .collect()
        };
        if exact {
            assert_eq!(cols(ov), cols(tv), "{name}/{v} printer columns");
        }
    }
}

#[test]
fn controllers_crds_helm_controller_match_upstream() {
    let ours = crds::k3s_builtin();
    check(&ours[0], "helm-controller-v0.17.7-helmcharts.yaml", true);
    check(
        &ours[1],
        "helm-controller-v0.17.7-helmchartconfigs.yaml",
        true,
    );
}

#[test]
fn controllers_crds_eso_are_a_subset_of_upstream() {
    let ours = crds::eso();
    check(
        &ours[0],
        "external-secrets-v2.9.0-clustersecretstores.yaml",
        false,
    );
    check(
        &ours[1],
        "external-secrets-v2.9.0-externalsecrets.yaml",
        false,
    );
}

#[test]
fn controllers_crds_argocd_are_a_subset_of_upstream() {
    let ours = crds::argocd();
    check(&ours[0], "argo-cd-v3.5.1-application.yaml", false);
    check(&ours[1], "argo-cd-v3.5.1-appproject.yaml", false);
}
