//! `lab-vault --listen ADDR --data-dir DIR`: the Vault stand-in as a standalone server.
//!
//! Follows `../shared/reference/platform-facts.md` §1 through `rebox_lab::vault` (see there
//! for what is and is not served). Prints the bound address (`127.0.0.1:PORT`) on stdout once
//! listening, so a caller can pass port 0 and read the real port. Never shipped.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "lab-vault",
    about = "Vault API stand-in for rebox's lab (never shipped)"
)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8200 (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:8200")]
    listen: String,
    /// Directory holding the Vault state (lab-vault.json); created if missing
    #[arg(long)]
    data_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    // Refuse an unreadable state before announcing an address.
    rebox_lab::vault::state::load(&args.data_dir)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{addr}")?;
        out.flush()?;
    }
    rebox_lab::vault::serve(listener, args.data_dir).await
}
