//! `lab-k3s`: the k3s stand-in binary (see `rebox_lab::k3s`).
//!
//! `lab-k3s server [k3s server flags] [--listen ADDR:PORT]` serves the Kubernetes API and
//! prints `listening on ADDR:PORT` once the kubeconfig is written; `lab-k3s --version`
//! prints a k3s-style version line. Other k3s subcommands (agent, kubectl, ...) are refused.

use rebox_lab::k3s;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-v") | Some("version") => {
            println!("k3s version {} (lab-k3s)", k3s::discovery::GIT_VERSION);
            println!("go version go1.25.5");
            std::process::ExitCode::SUCCESS
        }
        Some("server") => {
            let opts = match k3s::config::parse_server_args(&args[1..]) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("lab-k3s: {e:#}");
                    return std::process::ExitCode::from(2);
                }
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(run(opts)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lab-k3s: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        other => {
            eprintln!("lab-k3s: unsupported command {other:?}; usage: lab-k3s server --data-dir DIR --listen 127.0.0.1:PORT --write-kubeconfig FILE");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(opts: k3s::Options) -> anyhow::Result<()> {
    let p = k3s::prepare(&opts).await?;
    println!("listening on {}", p.addr);
    use std::io::Write;
    std::io::stdout().flush()?;
    k3s::serve(p).await
}
