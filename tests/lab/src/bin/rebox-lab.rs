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
//! rebox-lab nas build --dir DIR [--from-server NAME] [--apps N]
//!                                                  # Longhorn backups, as the old node made them
//! rebox-lab nas publish NAME --dir DIR --export /volume1/longhorn-backups
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
    /// The lab's NAS: Longhorn backupstores for restore rehearsals.
    Nas {
        #[command(subcommand)]
        cmd: NasCmd,
    },
}

#[derive(Subcommand)]
enum NasCmd {
    /// Write a backupstore: every bound PVC of a lab server (what its Longhorn would have
    /// backed up, 30 minutes ago) and/or N generated app volumes in three namespaces.
    Build {
        #[arg(long)]
        dir: PathBuf,
        /// Back up the Longhorn volumes of this lab server.
        #[arg(long)]
        from_server: Option<String>,
        /// Generated app volumes (1 MiB of data each), backed up 1 to N hours ago.
        #[arg(long, default_value_t = 0)]
        apps: usize,
    },
    /// Copy a backupstore to a lab server's NFS export path (the NAS survives a node rebuild).
    Publish {
        name: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        export: String,
    },
}

const K3S_DATA: &str = "/var/lib/rancher/k3s";

fn nas_build(dir: PathBuf, from_server: Option<String>, apps: usize) -> Result<()> {
    use rebox_lab::chrono::{Duration, Utc};
    use rebox_lab::k3s::controllers::longhorn::volume_data_dir;
    use rebox_lab::nas::{NasFixture, VolumeData};
    let now = Utc::now();
    let mut fixture = NasFixture::new(&dir);
    let mut count = 0;
    if let Some(name) = from_server {
        let lab = LabServer::attach(&name)?;
        let pvcs = lab.run_as_root_ok(
            "KUBECONFIG=/etc/rancher/k3s/k3s.yaml kubectl get pvc -A -o jsonpath='{range .items[?(@.status.phase==\"Bound\")]}{.metadata.namespace} {.metadata.name} {.spec.volumeName}{\"\\n\"}{end}'",
        )?;
        for line in pvcs.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [ns, pvc, volume] = f[..] else { continue };
            let data = lab.merged_path(
                volume_data_dir(std::path::Path::new(K3S_DATA), volume)
                    .to_str()
                    .expect("utf-8 path"),
            );
            fixture = fixture.volume(volume, ns, pvc, VolumeData::Dir(data), now - Duration::minutes(30));
            count += 1;
        }
    }
    for i in 0..apps {
        let ns = ["apps", "media", "monitoring"][i % 3];
        let volume = format!("pvc-app-{i:02}");
        let content: Vec<u8> = (0..(1u32 << 20)).map(|b| (b as u8) ^ (i as u8)).collect();
        fixture = fixture.volume(
            &volume,
            ns,
            &format!("data-{i:02}"),
            VolumeData::Files(vec![("data.bin".into(), content)]),
            now - Duration::hours(1 + i as i64),
        );
        count += 1;
    }
    fixture.build()?;
    eprintln!("rebox-lab: wrote Longhorn backups of {count} volume(s) to {}", dir.display());
    Ok(())
}

fn nas_publish(name: &str, dir: &std::path::Path, export: &str) -> Result<()> {
    let lab = LabServer::attach(name)?;
    lab.run_as_root_ok(&format!("rm -rf '{export}' && mkdir -p '{export}'"))?;
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.display()))
        .arg(lab.merged_path(export))
        .status()?;
    anyhow::ensure!(status.success(), "copying the backupstore failed");
    Ok(())
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
        Cmd::Nas { cmd } => match cmd {
            NasCmd::Build {
                dir,
                from_server,
                apps,
            } => nas_build(dir, from_server, apps)?,
            NasCmd::Publish { name, dir, export } => nas_publish(&name, &dir, &export)?,
        },
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
