//! Command-line interface: every subcommand and flag, parsed by clap.
//!
//! Output and confirmation flags are global; connection flags belong to the subcommands that
//! connect (their `-i` is the SSH key, while `rebox key` uses `-i` for age identities, as age does).

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "rebox",
    version,
    about = "Rebuild a destroyed single-node k3s homelab from a laptop, over SSH",
    long_about = "rebox rebuilds a destroyed single-node k3s homelab from a laptop over SSH: \
                  k3s, Longhorn volumes restored from the NAS, Vault unsealed from the offline \
                  backup, then GitOps. Start with `rebox init`, then `rebox preflight`."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted by every subcommand.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Configuration file [default: ./rebox.toml, else ~/.config/rebox/rebox.toml]
    #[arg(long, global = true, value_name = "FILE", env = "REBOX_CONFIG")]
    pub config: Option<PathBuf>,

    /// Answer yes to every confirmation (for scripts); never prompts
    #[arg(short = 'y', long, global = true)]
    pub yes: bool,

    /// Print machine-readable JSON on stdout instead of the human report
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output on stderr (-v info, -vv debug, -vvv trace). Secrets are never logged.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
}

/// SSH connection settings; each overrides the `[server]` table of rebox.toml.
/// Flattened into every subcommand that talks to the server.
#[derive(Debug, Args, Clone, Default)]
pub struct ConnArgs {
    /// Server host name or address (an alias from ~/.ssh/config works too)
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,

    /// SSH port
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// SSH user (must have passwordless sudo)
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// SSH private key file (repeatable; tried after the ssh-agent)
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,

    /// known_hosts file to check and record host keys in [default: ~/.ssh/known_hosts]
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,

    /// Trust and record the host key of a server not yet in known_hosts
    #[arg(long)]
    pub accept_new_host_key: bool,

    /// Replace the recorded host key with this one (the SHA256:… fingerprint read on the
    /// rebuilt server's console). Any other key is still refused.
    #[arg(long, value_name = "SHA256:FINGERPRINT")]
    pub replace_host_key: Option<String>,

    /// Seconds to wait for the TCP connection and SSH handshake
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented rebox.toml (asks questions unless --defaults)
    Init(InitArgs),
    /// Read-only checks of the laptop, the server and the NAS before a rebuild
    Preflight(PreflightArgs),
    /// The age-encrypted offline backup of the Vault unseal key
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print shell completions
    Completions {
        /// Shell to generate completions for
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout
    Man,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Write the defaults without asking questions
    #[arg(long)]
    pub defaults: bool,
    /// Where to write [default: ./rebox.toml]
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Overwrite an existing file
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PreflightArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Accept an operating system other than the configured one (default Ubuntu 26.04)
    #[arg(long)]
    pub allow_os: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write the unseal key to an age-encrypted offline backup file
    Export(KeyExportArgs),
    /// Decrypt a backup and check it, printing metadata and fingerprints, never the key
    Verify(KeyVerifyArgs),
    /// Print the unseal key from a backup (needs --reveal)
    Show(KeyShowArgs),
}

#[derive(Debug, Args)]
pub struct KeyExportArgs {
    /// Read the unseal key (one share per line) from standard input
    #[arg(long)]
    pub from_stdin: bool,
    /// Encrypt to an age recipient (age1…) or SSH public key line (repeatable)
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    pub recipients: Vec<String>,
    /// Encrypt to the recipients listed in FILE (repeatable)
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    pub recipients_files: Vec<PathBuf>,
    /// Also (or only) encrypt with a passphrase asked on the terminal
    #[arg(short = 'p', long)]
    pub passphrase: bool,
    /// Identity used to read the written file back before reporting success (repeatable)
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    /// Output file
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,
    /// Binary age output instead of ASCII armor
    #[arg(long)]
    pub binary: bool,
    /// Overwrite an existing output file
    #[arg(long)]
    pub force: bool,
    /// Also write a printable page next to the output (FILE.paper.txt)
    #[arg(long)]
    pub paper: bool,
    /// Extra named secret to store from an environment variable: NAME=ENVVAR (repeatable)
    #[arg(long = "extra-from-env", value_name = "NAME=ENVVAR")]
    pub extra_from_env: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KeyVerifyArgs {
    /// Identity file (age or SSH private key); without one a passphrase is asked
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    /// Backup file
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct KeyShowArgs {
    /// Identity file (age or SSH private key); without one a passphrase is asked
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    /// Really print the key
    #[arg(long)]
    pub reveal: bool,
    /// Backup file
    pub file: PathBuf,
}
