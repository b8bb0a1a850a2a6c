//! Measures rebox's SSH transport for `scripts/bench-ssh`: one connection, an upload of FILE
//! and N small commands. Prints one JSON line of figures; it asserts nothing.
//!
//! usage: ssh_bench HOST USER KEY KNOWN_HOSTS FILE N

use std::time::{Duration, Instant};

use rebox::remote::{HostKeyPolicy, Remote, Target, UploadSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, user, key, known_hosts, file, n] = args.as_slice() else {
        anyhow::bail!("usage: ssh_bench HOST USER KEY KNOWN_HOSTS FILE N");
    };
    let n: usize = n.parse()?;
    let target = Target {
        alias: host.clone(),
        host: host.clone(),
        port: 22,
        user: user.clone(),
        identity_files: vec![key.into()],
        connect_timeout: Duration::from_secs(10),
        keepalive: Duration::from_secs(15),
    };
    let policy = HostKeyPolicy {
        known_hosts: known_hosts.into(),
        accept_new: false,
        replace: None,
        ask: None,
    };

    let start = Instant::now();
    let remote = Remote::connect(target, policy).await?;
    let connect_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    for i in 0..n {
        let out = remote.exec(&format!("echo {i}")).await?;
        anyhow::ensure!(out.success(), "command {i} failed");
    }
    let commands_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let spec = UploadSpec {
        local: std::path::Path::new(file),
        remote: "/tmp/rebox-bench-upload",
        mode: 0o644,
        owner: "root:root",
    };
    let report = remote.upload(&spec).await?;
    let upload_secs = start.elapsed().as_secs_f64();
    remote.close().await;

    println!(
        "{}",
        serde_json::json!({
            "connect_secs": connect_secs,
            "commands": n,
            "commands_secs": commands_secs,
            "upload_bytes": report.size,
            "upload_secs": upload_secs,
        })
    );
    Ok(())
}
