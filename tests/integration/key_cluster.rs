//! `rebox key export` from the cluster and `rebox key verify --against-cluster`, against a lab
//! server whose k3s rebox installed itself (`rebox rebuild` with the lab's k3s stand-in).
//! The unseal key Secret is created with real kubectl on the server, the key fed on stdin.
//! What rebox writes is decrypted with the stock `age` CLI.

use crate::{common, key_support};
use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine as _;
use common::{lab_bundle, Lab};
use key_support::age_tool;
use rebox_lab::server::LabOptions;

const KUBECTL: &str = "KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl";
/// Distinctive shares: any appearance of them (or of their base64) in output is a leak.
const CLUSTER_SHARE: &str = "Y2x1c3Rlci1zaGFyZS1ORVZFUi1QUklOVC1NRS0xMjM0NTY3OA==";
const MULTI: [&str; 3] = [
    "bXVsdGktc2hhcmUtb25lLU5FVkVSLVBSSU5ULU1FLTExMTE=",
    "bXVsdGktc2hhcmUtdHdvLU5FVkVSLVBSSU5ULU1FLTIyMjI=",
    "bXVsdGktc2hhcmUtdGhyZWUtTkVWRVItUFJJTlQtTUUtMzM=",
];
const ROTATED: &str = "cm90YXRlZC1zaGFyZS1ORVZFUi1QUklOVC1NRS05ODc2NTQ=";

/// A lab server with k3s installed by `rebox rebuild`, plus an age identity.
struct ClusterLab {
    lab: Lab,
    identity: PathBuf,
    recipient: String,
}

impl ClusterLab {
    fn start() -> ClusterLab {
        let lab = Lab::start(LabOptions::default());
        lab.trust();
        let bundle = lab_bundle(lab.dir.path());
        // Only k3s is needed: the rebuild's failpoint stops it right after the node is Ready
        // (the tests make their own unseal key Secret).
        lab.rebox()
            .env("REBOX_FAILPOINT_EXIT_AFTER", "k3s-running")
            .args(["--yes", "rebuild"])
            .args(lab.conn_args())
            .arg("--bundle")
            .arg(&bundle)
            .assert()
            .code(86);
        let identity = lab.dir.path().join("me.key");
        let out = std::process::Command::new(age_tool("age-keygen"))
            .arg("-o")
            .arg(&identity)
            .output()
            .unwrap();
        assert!(out.status.success(), "age-keygen failed");
        let out = std::process::Command::new(age_tool("age-keygen"))
            .arg("-y")
            .arg(&identity)
            .output()
            .unwrap();
        let recipient = String::from_utf8(out.stdout).unwrap().trim().to_string();
        ClusterLab {
            lab,
            identity,
            recipient,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.lab.dir.path().join(name)
    }

    /// The lab's `-i KEY --known-hosts FILE`, spelled the `rebox key` way.
    fn key_conn_args(&self) -> Vec<String> {
        self.lab
            .conn_args()
            .into_iter()
            .map(|a| {
                if a == "-i" {
                    "--ssh-identity".into()
                } else {
                    a
                }
            })
            .collect()
    }

    /// Runs a shell command as root on the server with `stdin` piped in; panics on failure.
    fn root_with_stdin(&self, shell: &str, stdin: &str) {
        let out = self.lab.root_with_stdin(shell, stdin);
        assert!(
            out.status.success(),
            "`{shell}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates (or replaces) Secret `name` in `security` with data key `key` = `value`,
    /// the value on kubectl's stdin, never on a command line.
    fn set_secret(&self, name: &str, key: &str, value: &str) {
        self.lab
            .server
            .run_as_root_ok(&format!(
                "{KUBECTL} get namespace security >/dev/null 2>&1 || {KUBECTL} create namespace security; \
                 {KUBECTL} delete secret {name} -n security --ignore-not-found"
            ))
            .unwrap();
        self.root_with_stdin(
            &format!(
                "{KUBECTL} create secret generic {name} -n security --from-file={key}=/dev/stdin"
            ),
            value,
        );
    }

    /// `rebox key export` from the cluster to our recipient, at `-vvv`.
    fn export(&self, out: &Path, extra: &[&str]) -> Output {
        self.lab
            .rebox()
            .args(["-vvv", "key", "export", "-r", &self.recipient, "-i"])
            .arg(&self.identity)
            .arg("-o")
            .arg(out)
            .args(self.key_conn_args())
            .args(extra)
            .output()
            .unwrap()
    }

    /// `rebox key verify FILE --against-cluster`.
    fn verify_against_cluster(&self, file: &Path, extra: &[&str]) -> Output {
        self.lab
            .rebox()
            .args(extra)
            .args(["key", "verify", "--against-cluster", "-i"])
            .arg(&self.identity)
            .arg(file)
            .args(self.key_conn_args())
            .output()
            .unwrap()
    }

    /// The stock `age -d` of a backup file: the plaintext document.
    fn age_decrypt(&self, file: &Path) -> String {
        let out = std::process::Command::new(age_tool("age"))
            .arg("-d")
            .arg("-i")
            .arg(&self.identity)
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "age -d failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// The shares in a decrypted backup document, in order.
fn doc_shares(doc: &str) -> Vec<String> {
    let v: toml::Value = toml::from_str(doc).unwrap_or_else(|e| panic!("not TOML ({e})"));
    v["unseal"]["shares"]
        .as_array()
        .expect("unseal.shares")
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_string())
        .collect()
}

/// Neither a share nor the base64 of the Secret's value (what the API sends) in `output`.
fn assert_no_key(what: &str, output: &str, secret_value: &str) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret_value);
    for s in secret_value.lines().chain([b64.as_str()]) {
        assert!(
            !output.contains(s),
            "{what}: the key ({s:?}) leaked:\n{output}"
        );
    }
}

#[test]
fn key_export_from_cluster_decrypts_with_age_single_and_multi_share() {
    let c = ClusterLab::start();

    // One share.
    c.set_secret("vault-unseal-key", "key", &format!("{CLUSTER_SHARE}\n"));
    let file = c.path("vault-key.age");
    let out = c.export(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_no_key("export", &text(&out), CLUSTER_SHARE);
    assert_eq!(doc_shares(&c.age_decrypt(&file)), [CLUSTER_SHARE]);
    let mode = std::fs::metadata(&file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // Three shares, one per line, in a Secret and key named in rebox.toml.
    let config = c.path("rebox.toml");
    let mut toml_text = std::fs::read_to_string(&config).unwrap();
    toml_text
        .push_str("\n[vault]\nunseal_secret = \"other-unseal\"\nunseal_secret_key = \"shares\"\n");
    std::fs::write(&config, toml_text).unwrap();
    let value = format!("{}\n", MULTI.join("\n"));
    c.set_secret("other-unseal", "shares", &value);
    let multi = c.path("multi.age");
    let out = c.export(&multi, &["--threshold", "2", "--share-count", "5"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_no_key("multi export", &text(&out), &value);
    let doc = c.age_decrypt(&multi);
    assert_eq!(doc_shares(&doc), MULTI);
    assert!(doc.contains("threshold = 2"), "{doc}");
    for s in MULTI {
        assert!(
            doc.contains(&sha256(s)),
            "fingerprint of a share missing:\n{doc}"
        );
    }
}

#[test]
fn key_export_from_cluster_missing_secret_or_key_is_a_clear_error_and_writes_nothing() {
    let c = ClusterLab::start();
    let file = c.path("vault-key.age");

    // No Secret at all.
    let out = c.export(&file, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("no Secret security/vault-unseal-key")
            && err.contains("rebox doctor")
            && err.contains("nothing was written"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(c.lab.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("vault-key"))
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");

    // The Secret exists, with the key under another name.
    c.set_secret("vault-unseal-key", "unseal", &format!("{CLUSTER_SHARE}\n"));
    let out = c.export(&file, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("Secret security/vault-unseal-key has no key `key`")
            && err.contains("rebox doctor"),
        "{err}"
    );
    assert!(!file.exists());
    assert_no_key("missing key", &text(&out), CLUSTER_SHARE);

    // Same for verify --against-cluster.
    c.set_secret("vault-unseal-key", "key", &format!("{CLUSTER_SHARE}\n"));
    assert!(c.export(&file, &[]).status.success());
    c.lab
        .server
        .run_as_root_ok(&format!(
            "{KUBECTL} delete secret vault-unseal-key -n security"
        ))
        .unwrap();
    let out = c.verify_against_cluster(&file, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no Secret security/vault-unseal-key"),
        "{}",
        text(&out)
    );
}

#[test]
fn key_verify_against_cluster_matches_then_mismatches_after_the_secret_changes() {
    let c = ClusterLab::start();
    let value = format!("{}\n", MULTI.join("\n"));
    c.set_secret("vault-unseal-key", "key", &value);
    let file = c.path("vault-key.age");
    let out = c.export(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));

    // Match.
    let out = c.verify_against_cluster(&file, &["-vvv"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("MATCH: the backup holds exactly"), "{all}");
    assert!(!all.contains("MISMATCH"), "{all}");
    for s in MULTI {
        assert!(
            all.matches(&sha256(s)).count() >= 3,
            "the summary and both lists show each fingerprint:\n{all}"
        );
    }
    assert_no_key("verify (match)", &all, &value);

    // JSON says so too.
    let out = c.verify_against_cluster(&file, &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["against_cluster"]["matches"], true, "{v}");

    // The cluster's key changes (a rotation the backup missed).
    c.set_secret("vault-unseal-key", "key", &format!("{ROTATED}\n"));
    let out = c.verify_against_cluster(&file, &["-vvv"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("MISMATCH"), "{all}");
    assert!(!all.contains("MATCH: the backup holds exactly"), "{all}");
    assert!(
        all.contains(&sha256(ROTATED)),
        "cluster fingerprint missing:\n{all}"
    );
    for s in MULTI {
        assert!(
            all.contains(&sha256(s)),
            "backup fingerprint missing:\n{all}"
        );
    }
    assert!(all.contains("rebox key export"), "no next step:\n{all}");
    assert_no_key("verify (mismatch)", &all, &value);
    assert_no_key("verify (mismatch)", &all, ROTATED);

    let out = c.verify_against_cluster(&file, &["--json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["against_cluster"]["matches"], false, "{v}");
    assert_eq!(
        v["against_cluster"]["only_in_cluster"][0],
        sha256(ROTATED),
        "{v}"
    );
}

#[test]
fn key_cluster_source_never_prints_the_key_at_vvv() {
    let c = ClusterLab::start();
    let value = format!("{}\n{CLUSTER_SHARE}\n", MULTI.join("\n"));
    c.set_secret("vault-unseal-key", "key", &value);
    let file = c.path("vault-key.age");
    let out = c.export(&file, &["--paper"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    // The logs really are at trace level and cover the cluster read, or this proves nothing.
    assert!(all.contains("TRACE"), "no trace logs:\n{all}");
    assert!(
        all.contains("read the unseal key Secret"),
        "the cluster read is not logged:\n{all}"
    );
    assert_no_key("export -vvv", &all, &value);
    assert_no_key(
        "paper page",
        &std::fs::read_to_string(c.path("vault-key.age.paper.txt")).unwrap(),
        &value,
    );
    // What was written is the cluster's key, so the check above was about the right text.
    let mut want: Vec<String> = MULTI.iter().map(|s| s.to_string()).collect();
    want.push(CLUSTER_SHARE.into());
    assert_eq!(doc_shares(&c.age_decrypt(&file)), want);

    let out = c.verify_against_cluster(&file, &["-vvv"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_no_key("verify -vvv", &text(&out), &value);
}
