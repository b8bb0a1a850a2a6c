//! Without `--bundle`, rebox downloads k3s from the release (here a local mirror standing in
//! for GitHub, set by `[k3s] release_url`) and checks it against the release's sha256 file on
//! the laptop; a mismatch is refused before the server is touched.

use crate::common;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use common::{lab_bundle, sha256_hex, Lab};
use rebox_lab::server::LabOptions;

/// A minimal HTTP/1.0 file server for one directory, on a loopback port, for the test's life.
fn serve(dir: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // Drain the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let path = request
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .replace("%2B", "+");
            let mut out = stream;
            match std::fs::read(dir.join(path.trim_start_matches('/'))) {
                Ok(body) => {
                    let _ = write!(
                        out,
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = out.write_all(&body);
                }
                Err(_) => {
                    let _ = out.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                }
            }
        }
    });
    port
}

/// A release directory as GitHub lays it out: `<tag>/k3s` and `<tag>/sha256sum-amd64.txt`.
fn release(root: &Path, binary: &Path, listed_sha: &str) {
    let tag = root.join("v1.35.0+k3s1");
    std::fs::create_dir_all(&tag).unwrap();
    std::fs::copy(binary, tag.join("k3s")).unwrap();
    std::fs::write(
        tag.join("sha256sum-amd64.txt"),
        format!("{listed_sha}  k3s\n0000  k3s-airgap-images-amd64.tar\n"),
    )
    .unwrap();
}

fn plan_without_bundle(lab: &Lab, port: u16) -> std::process::Output {
    let cfg = lab.dir.path().join("rebox.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    if !text.contains("release_url") {
        std::fs::write(
            &cfg,
            format!("{text}\n[k3s]\nrelease_url = \"http://127.0.0.1:{port}/{{tag}}/{{file}}\"\n"),
        )
        .unwrap();
    }
    lab.rebox()
        .arg("--json")
        .arg("plan")
        .args(lab.conn_args())
        .output()
        .unwrap()
}

#[test]
fn rebuild_plan_downloads_k3s_and_checks_the_release_sha256() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    let binary = bundle.join("k3s");
    let mirror = lab.dir.path().join("mirror");
    release(&mirror, &binary, &sha256_hex(&binary));
    let out = plan_without_bundle(&lab, serve(mirror));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cached = lab.dir.path().join(".cache/rebox/k3s-v1.35.0+k3s1-amd64");
    assert_eq!(
        sha256_hex(&cached),
        sha256_hex(&binary),
        "the cached download differs"
    );
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains(&sha256_hex(&binary)[..16]), "{plan}");
}

#[test]
fn rebuild_refuses_a_download_whose_sha256_does_not_match_the_release() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let bundle = lab_bundle(lab.dir.path());
    let binary = bundle.join("k3s");
    let mirror = lab.dir.path().join("mirror");
    release(&mirror, &binary, &"ab".repeat(32));
    let out = plan_without_bundle(&lab, serve(mirror));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("checksum mismatch") && stderr.contains("Nothing was sent"),
        "{stderr}"
    );
    let cache = lab.dir.path().join(".cache/rebox");
    let kept: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(kept.is_empty(), "an unchecked download was kept: {kept:?}");
    assert!(!lab.server.path("/var/lib/rebox/journal.json").exists());
}
