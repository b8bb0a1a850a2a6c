//! `rebox-lab`: lab servers for scripts (see `scripts/lab-server`). Needs root.
//!
//! ```text
//! rebox-lab server up [--name NAME] [--state-dir DIR] [--sudo-password] [--os-release FILE]
//!                     [--authorized-key LINE]... [--disk-size 64G]
//!                                                  # prints the lab's JSON; it keeps running
//! rebox-lab server down NAME                       # hostname or netns name
//! rebox-lab server rebuild NAME                    # new host key; prints the new JSON
//! rebox-lab server exec NAME -- SHELL              # bash -c SHELL as root inside
//! rebox-lab server list
//! rebox-lab cleanup                                # leftovers of dead processes
//! ```

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rebox_lab::server::{self, LabOptions, LabServer};
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "rebox-lab", about = "The simulated homelab of rebox's tests")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Lab servers: network namespace + overlay root + real sshd.
    Server {
        #[command(subcommand)]
        cmd: ServerCmd,
    },
    /// Remove leftovers of labs whose owning process died.
    Cleanup,
}

#[derive(Subcommand)]
enum ServerCmd {
    /// Start a lab server that keeps running; print its JSON (name, addr, client_key, ...).
    Up {
        /// Hostname of the server (default: its netns name, rebox-lab-N).
        #[arg(long)]
        name: Option<String>,
        /// Parent of the scratch dir (default: /run/rebox-lab/<netns>).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// sudo asks for a password (the user's password is "homelab").
        #[arg(long)]
        sudo_password: bool,
        /// File with the /etc/os-release to install (default: Ubuntu 26.04).
        #[arg(long)]
        os_release: Option<PathBuf>,
        /// Another authorized_keys line for homelab (repeatable).
        #[arg(long)]
        authorized_key: Vec<String>,
        /// Size of the server's root file system as `df /` reports it (default 64G).
        #[arg(long)]
        disk_size: Option<String>,
    },
    /// Stop a lab server and remove everything it created.
    Down { name: String },
    /// Rebuild a lab server (fresh overlay, new host key, same address); print its JSON.
    Rebuild { name: String },
    /// Run `bash -c SHELL` as root inside a lab server.
    Exec {
        name: String,
        #[arg(last = true, required = true)]
        shell: Vec<String>,
    },
    /// List lab servers (JSON array).
    List,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Cleanup => {
            let n = server::cleanup_stale()?;
            eprintln!("rebox-lab: removed {n} stale lab(s)");
        }
        Cmd::Server { cmd } => match cmd {
            ServerCmd::Up {
                name,
                state_dir,
                sudo_password,
                os_release,
                authorized_key,
                disk_size,
            } => {
                let os_release = match os_release {
                    Some(p) => Some(
                        std::fs::read_to_string(&p)
                            .with_context(|| format!("reading {}", p.display()))?,
                    ),
                    None => None,
                };
                let lab = LabServer::start(LabOptions {
                    sudo_nopasswd: !sudo_password,
                    os_release,
                    extra_authorized_keys: authorized_key,
                    name_hint: name,
                    scratch_parent: state_dir,
                    disk_size,
                })?;
                let info = lab.detach()?;
                print_json(&info)?;
            }
            ServerCmd::Down { name } => {
                LabServer::attach(&name)?.stop()?;
            }
            ServerCmd::Rebuild { name } => {
                let mut lab = LabServer::attach(&name)?;
                lab.rebuild()?;
                print_json(lab.info())?;
            }
            ServerCmd::Exec { name, shell } => {
                let lab = LabServer::attach(&name)?;
                let status = lab.command_as_root(&shell.join(" ")).status()?;
                std::process::exit(status.code().unwrap_or(1));
            }
            ServerCmd::List => print_json(&server::list()?)?,
        },
    }
    Ok(())
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}
