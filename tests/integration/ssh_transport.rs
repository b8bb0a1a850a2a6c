//! The SSH transport against a real lab sshd, through rebox's library: an upload cut mid-way
//! and resumed with its sha256 checked, a corrupted partial upload caught, exec with separate
//! streams, and a tunnel carrying an HTTP request to a listener inside the namespace.

use crate::common;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{sha256_hex, Lab};
use rebox::remote::{HostKeyPolicy, Remote, RemoteError, Target, UploadSpec};
use rebox_lab::server::LabOptions;

fn target(lab: &Lab) -> (Target, HostKeyPolicy) {
    let t = Target {
        alias: lab.server.addr().to_string(),
        host: lab.server.addr().to_string(),
        port: 22,
        user: lab.server.user().to_string(),
        identity_files: vec![lab.server.client_key().to_path_buf()],
        connect_timeout: Duration::from_secs(10),
        keepalive: Duration::from_secs(5),
    };
    let p = HostKeyPolicy {
        known_hosts: lab.known_hosts(),
        accept_new: false,
        replace: None,
        ask: None,
    };
    (t, p)
}

async fn connect(lab: &Lab) -> Remote {
    let (t, p) = target(lab);
    Remote::connect(t, p).await.expect("connecting to the lab")
}

fn random_file(dir: &std::path::Path, mib: usize) -> std::path::PathBuf {
    use rand::RngCore;
    let path = dir.join("artifact.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        rand::thread_rng().fill_bytes(&mut chunk);
        f.write_all(&chunk).unwrap();
    }
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_cut_midway_resumes_and_checks_sha256() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let local = random_file(lab.dir.path(), 64);
    let sha = sha256_hex(&local);
    let staged = lab.server.path(&format!(
        "/home/{}/.cache/rebox/uploads/{sha}.part",
        lab.server.user()
    ));

    // Start an upload and cut the link once part of the file is on the server.
    let remote = connect(&lab).await;
    let spec_local = local.clone();
    let upload = tokio::spawn(async move {
        let spec = UploadSpec {
            local: &spec_local,
            remote: "/usr/local/bin/k3s",
            mode: 0o755,
            owner: "root:root",
        };
        remote.upload(&spec).await
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let len = std::fs::metadata(&staged).map(|m| m.len()).unwrap_or(0);
        if len >= 4 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the upload never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lab.server
        .run_as_root_ok("pkill -KILL -f '[s]shd: homelab'")
        .unwrap();
    let err = upload
        .await
        .unwrap()
        .expect_err("the upload survived a cut link");
    assert!(
        matches!(
            err.downcast_ref::<RemoteError>(),
            Some(RemoteError::Dropped { .. })
        ),
        "expected a dropped-link error, got: {err:#}"
    );
    let partial = std::fs::metadata(&staged).unwrap().len();
    assert!(partial > 0 && partial < 64 << 20, "partial = {partial}");
    assert!(
        !lab.server.path("/usr/local/bin/k3s").exists(),
        "a partial file reached its destination"
    );

    // A new connection resumes after the bytes already there.
    let remote = connect(&lab).await;
    let spec = UploadSpec {
        local: &local,
        remote: "/usr/local/bin/k3s",
        mode: 0o755,
        owner: "root:root",
    };
    let report = remote.upload(&spec).await.unwrap();
    assert!(
        report.resumed_from >= partial.min(1),
        "did not resume: {report:?}"
    );
    assert!(report.resumed_from > 0, "did not resume: {report:?}");
    assert_eq!(report.sha256, sha);
    let installed = lab.server.path("/usr/local/bin/k3s");
    assert_eq!(sha256_hex(&installed), sha);
    let stat = lab
        .server
        .run_as_root_ok("stat -c '%a %U:%G' /usr/local/bin/k3s")
        .unwrap();
    assert_eq!(stat.trim(), "755 root:root");
    assert!(!staged.exists(), "the staging file was left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_with_corrupt_partial_is_refused_then_redone() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let local = random_file(lab.dir.path(), 2);
    let sha = sha256_hex(&local);
    // An earlier attempt left a partial file whose bytes are wrong.
    let user = lab.server.user().to_string();
    lab.server
        .run_as_root_ok(&format!(
            "install -d -o {user} -g {user} -m 700 /home/{user}/.cache /home/{user}/.cache/rebox /home/{user}/.cache/rebox/uploads && \
             head -c 1048576 /dev/urandom > /home/{user}/.cache/rebox/uploads/{sha}.part && chown {user}: /home/{user}/.cache/rebox/uploads/{sha}.part"
        ))
        .unwrap();
    let remote = connect(&lab).await;
    let spec = UploadSpec {
        local: &local,
        remote: "/opt/rebox/artifact",
        mode: 0o600,
        owner: "root:root",
    };
    let err = remote
        .upload(&spec)
        .await
        .expect_err("a corrupt resume was accepted");
    assert!(
        format!("{err:#}").contains("does not match its sha256"),
        "{err:#}"
    );
    assert!(!lab.server.path("/opt/rebox/artifact").exists());
    // The bad partial is gone, so the next attempt uploads from zero and succeeds.
    let report = remote.upload(&spec).await.unwrap();
    assert_eq!(report.resumed_from, 0);
    assert_eq!(sha256_hex(&lab.server.path("/opt/rebox/artifact")), sha);
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_keeps_streams_apart_and_passes_stdin() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    let remote = connect(&lab).await;
    let out = remote.exec("echo out; echo err >&2; exit 7").await.unwrap();
    assert_eq!(out.status, 7);
    assert_eq!(out.stdout_str(), "out\n");
    assert_eq!(out.stderr_str(), "err\n");
    let out = remote
        .sudo_with(
            "cat > /root/from-stdin && id -u",
            rebox::remote::ExecOptions {
                stdin: Some(b"payload"),
                quiet: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_str().trim(), "0");
    assert_eq!(
        std::fs::read(lab.server.path("/root/from-stdin")).unwrap(),
        b"payload"
    );

    // A command that hangs (a NAS that stopped answering) is abandoned at its deadline and
    // named; the connection still works afterwards.
    let started = std::time::Instant::now();
    let err = remote
        .exec_with(
            "sleep 600",
            rebox::remote::ExecOptions {
                deadline: Some(std::time::Duration::from_secs(2)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "waited past the deadline"
    );
    let timed_out = err
        .downcast_ref::<rebox::remote::RemoteError>()
        .is_some_and(|e| matches!(e, rebox::remote::RemoteError::CommandTimedOut { .. }));
    assert!(timed_out, "{err:#}");
    assert!(format!("{err:#}").contains("sleep 600"), "{err:#}");
    assert_eq!(
        remote.exec("echo still").await.unwrap().stdout_str(),
        "still\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tunnel_carries_http_to_a_listener_inside_the_namespace() {
    let lab = Lab::start(LabOptions::default());
    lab.trust();
    // An HTTP server that only exists on the server's loopback.
    lab.server
        .run_as_root_ok("mkdir -p /srv/www && echo 'hello through the tunnel' > /srv/www/index.txt")
        .unwrap();
    let mut http = lab
        .server
        .command_as_root("cd /srv/www && exec python3 -m http.server --bind 127.0.0.1 18080")
        .spawn()
        .unwrap();
    let remote = connect(&lab).await;
    // Wait until the listener is up, as the server sees it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !remote
        .exec("ss -Hltn 'sport = :18080' | grep -q 18080")
        .await
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "the HTTP listener never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tunnel = remote.tunnel("127.0.0.1", 18080).await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(tunnel.local_addr)
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /index.txt HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(response.contains("hello through the tunnel"), "{response}");
    // The laptop cannot reach that port directly: only the tunnel can.
    assert!(std::net::TcpStream::connect((lab.server.addr(), 18080)).is_err());
    let _ = http.kill();
    let _ = http.wait();
}
