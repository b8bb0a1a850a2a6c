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
    /// The ordered phases a rebuild would take on this server; changes nothing
    Plan(RebuildArgs),
    /// Rebuild the homelab on a fresh server (resumable: rerun after any interruption)
    Rebuild(RebuildArgs),
    /// The age-encrypted offline backup of the Vault unseal key
    #[command(subcommand)]
    Key(KeyCommand),
    /// Rotate the Vault unseal key: rekey with verification, new offline backup, Secret
    /// updated; crash-safe (rerun, or --resume, after any interruption)
    RotateUnsealKey(RotateArgs),
    /// The recovery sequence as a checklist (k3s, node, volumes, Vault, ESO, Argo CD)
    Status(StatusArgs),
    /// Diagnose the recovery guide's scenarios (Vault sealed, store degraded, app stuck); --fix repairs
    Doctor(DoctorArgs),
    /// Unseal Vault through the SSH tunnel, with the key from an offline backup or the Secret
    Unseal(UnsealArgs),
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
pub struct RebuildArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Bundle directory on the USB stick: the k3s binary, charts/, and SHA256SUMS
    /// [default: download k3s from its release, checked against the release's sha256 file]
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Print the phases and what each would do; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Take over a server that already has a k3s rebox did not install
    #[arg(long)]
    pub force: bool,
    /// Restore every Longhorn volume from the NAS backups (the node-destruction path)
    #[arg(long)]
    pub restore_from_nas: bool,
    /// Where the new Vault unseal key's offline backup is written (never over an existing file)
    #[arg(long, value_name = "FILE")]
    pub key_out: Option<PathBuf>,
    /// Encrypt the offline backup to this age or SSH public key (repeatable)
    #[arg(long = "key-recipient", value_name = "RECIPIENT")]
    pub key_recipients: Vec<String>,
    /// Encrypt the offline backup to the recipients listed in FILE (repeatable)
    #[arg(long = "key-recipients-file", value_name = "FILE")]
    pub key_recipients_files: Vec<PathBuf>,
    /// Private key (age identity or SSH key) that opens the offline backup (repeatable)
    #[arg(long = "key-identity", value_name = "FILE")]
    pub key_identities: Vec<PathBuf>,
    /// With --restore-from-nas: the offline backup holding the unseal key of the Vault being
    /// restored (asked for when not given); a passphrase-protected file asks for its passphrase
    #[arg(long, value_name = "FILE", requires = "restore_from_nas")]
    pub key_file: Option<PathBuf>,
    /// With --restore-from-nas: leave this volume out (e.g. its backup is corrupt); repeatable
    #[arg(
        long = "skip-volume",
        value_name = "VOLUME",
        requires = "restore_from_nas"
    )]
    pub skip_volumes: Vec<String>,
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
#[command(after_help = "Examples:\n  \
    rebox key export --host 192.168.1.10 --ssh-identity ~/.ssh/id_ed25519 -r age1… -o vault-key.age\n  \
    printf %s \"$KEY\" | rebox key export --from-stdin -r age1… -o vault-key.age\n  \
    rebox key export --from-stdin -p -R ~/.ssh/id_ed25519.pub -o vault-key.age < key.txt   \
    (writes vault-key.pass.age and vault-key.keys.age)")]
pub struct KeyExportArgs {
    /// Read the unseal key from standard input, one share per line (`Unseal Key N: …` lines
    /// from `vault operator init` work as they are).
    /// Without it the key is read from the cluster's Secret (`[vault]` in rebox.toml, default
    /// security/vault-unseal-key, key `key`) over SSH, using the connection flags.
    #[arg(long)]
    pub from_stdin: bool,
    #[command(flatten)]
    pub conn: KeyConnArgs,
    /// Encrypt to an age recipient (age1…) or an SSH public key line (repeatable)
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    pub recipients: Vec<String>,
    /// Encrypt to the recipients listed in FILE, one per line, e.g. ~/.ssh/id_ed25519.pub (repeatable)
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    pub recipients_files: Vec<PathBuf>,
    /// Encrypt with a passphrase typed twice on the terminal. With -r/-R too, two files are
    /// written (NAME.pass.age and NAME.keys.age), since age allows a passphrase only alone.
    #[arg(short = 'p', long)]
    pub passphrase: bool,
    /// Private key used to decrypt the written file once before reporting success (repeatable)
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    /// Output file (created with mode 0600)
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,
    /// ASCII-armored output (the default; accepted for age muscle memory)
    #[arg(short = 'a', long, conflicts_with = "binary")]
    pub armor: bool,
    /// Binary age output instead of ASCII armor
    #[arg(long)]
    pub binary: bool,
    /// Replace an existing output file (only after the new one is written and verified)
    #[arg(long)]
    pub force: bool,
    /// Also write a printable page next to each output (FILE.paper.txt): the armored text,
    /// fingerprints, date and the `age -d` command that recovers the key
    #[arg(long)]
    pub paper: bool,
    /// Cluster name recorded in the backup [default: `cluster_name` from rebox.toml]
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Shares Vault needs to unseal [default: the number of shares given]
    #[arg(long, value_name = "N")]
    pub threshold: Option<u32>,
    /// Shares Vault made in total [default: the number of shares given]
    #[arg(long = "share-count", value_name = "N")]
    pub share_count: Option<u32>,
    /// Also store a named secret read from an environment variable: NAME=ENVVAR (repeatable)
    #[arg(long = "extra-from-env", value_name = "NAME=ENVVAR")]
    pub extra_from_env: Vec<String>,
    /// Also store a named secret read from a file: NAME=FILE (repeatable)
    #[arg(long = "extra-from-file", value_name = "NAME=FILE")]
    pub extra_from_file: Vec<String>,
}

/// SSH connection flags for `rebox key` (the key's source or the Secret to compare with).
/// Same meaning as the other commands' connection flags, except that the SSH key is
/// `--ssh-identity`, since `-i` is the age identity here, as in age.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Connection (for the cluster's Secret)")]
pub struct KeyConnArgs {
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
    #[arg(long = "ssh-identity", value_name = "FILE")]
    pub ssh_identity: Vec<PathBuf>,
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

impl From<&KeyConnArgs> for ConnArgs {
    fn from(k: &KeyConnArgs) -> ConnArgs {
        ConnArgs {
            host: k.host.clone(),
            port: k.port,
            user: k.user.clone(),
            identity: k.ssh_identity.clone(),
            known_hosts: k.known_hosts.clone(),
            accept_new_host_key: k.accept_new_host_key,
            replace_host_key: k.replace_host_key.clone(),
            connect_timeout: k.connect_timeout,
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    rebox rotate-unseal-key --from vault-key.age -o vault-key-2.age -r age1… -i key.txt\n  \
    rebox rotate-unseal-key --resume -r age1… -i key.txt   (after an interruption)\n\n\
    The new key is written to -o and verified by decrypting it BEFORE it becomes active; an \
    encrypted journal in ~/.local/state/rebox/HOST/ lets a rerun finish or roll back an \
    interrupted rotation. At the end the --from backup is renamed FILE.superseded-TIME.")]
pub struct RotateArgs {
    /// The current offline backup (its key must be the one in the Secret). Without it the
    /// current key is read from the cluster's Secret
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Where the new offline backup is written (created 0600, never over an existing file,
    /// except the --from file itself: the new backup then takes its name once its key is
    /// active, and the old one becomes FILE.superseded-TIME); on a resume the interrupted
    /// rotation's file is used when absent
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Encrypt the new backup (and the rotation journal) to this age or SSH public key (repeatable)
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    pub recipients: Vec<String>,
    /// Encrypt to the recipients listed in FILE, one per line (repeatable)
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    pub recipients_files: Vec<PathBuf>,
    /// Private key (age identity or SSH key) that opens --from, the new backup and the journal (repeatable)
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    /// Protect the new backup (and the journal) with a passphrase typed twice on the terminal
    /// instead of -r/-R (age allows a passphrase only alone)
    #[arg(short = 'p', long)]
    pub passphrase: bool,
    /// Shares of the new key [default: as now]
    #[arg(long, value_name = "N")]
    pub shares: Option<u32>,
    /// Shares needed to unseal with the new key [default: as now]
    #[arg(long, value_name = "N")]
    pub threshold: Option<u32>,
    /// Finish an interrupted rotation (one whose new key never became active is rolled back
    /// and the rotation starts again); fails if there is none. A plain rerun does the same
    #[arg(long)]
    pub resume: bool,
    /// Cancel a rekey in progress that rebox did not start (its new key never became active)
    #[arg(long)]
    pub cancel_existing: bool,
    #[command(flatten)]
    pub conn: KeyConnArgs,
}

#[derive(Debug, Args)]
pub struct KeyVerifyArgs {
    /// Identity file (age or SSH private key, repeatable); a passphrase file asks on the terminal
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    /// Also compare the fingerprints with the key in the cluster's Secret (read over SSH with
    /// the connection flags); neither key is printed. Exits 2 on a mismatch.
    #[arg(long)]
    pub against_cluster: bool,
    #[command(flatten)]
    pub conn: KeyConnArgs,
    /// Backup file
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct KeyShowArgs {
    /// Identity file (age or SSH private key, repeatable); a passphrase file asks on the terminal
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    /// Really print the key (one share per line on stdout)
    #[arg(long)]
    pub reveal: bool,
    /// Print this named extra secret instead of the unseal key
    #[arg(long, value_name = "NAME")]
    pub extra: Option<String>,
    /// Backup file
    pub file: PathBuf,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 everything healthy, 2 something is not (yet), 1 rebox itself failed.\n\
    With --watch: follows the cluster until everything is healthy (exit 0) or Ctrl-C (exit 130)."
)]
pub struct StatusArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Follow the cluster until everything is healthy (or Ctrl-C), printing each change with
    /// the time since the start. With --json: one JSON object per line.
    #[arg(long)]
    pub watch: bool,
    /// Give up watching after this many seconds (exit 2) [default: never]
    #[arg(long, value_name = "SECS", requires = "watch")]
    pub timeout: Option<u64>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 no check fails (warnings allowed), 2 a check fails, 1 rebox itself failed.\n\
    Examples:\n  rebox doctor\n  rebox doctor --fix                       (asks before changing anything)\n  \
    rebox doctor --fix --yes --from vault-key.age --key-identity id.age"
)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Apply the fixes the checks propose (after a confirmation, or --yes), each checked after
    #[arg(long)]
    pub fix: bool,
    /// Offline backup of the unseal key, for fixes that need the key when the Secret cannot
    /// give it (unseal Vault, recreate the Secret)
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// age identity or SSH private key that opens --from (repeatable); a passphrase-protected
    /// backup asks on the terminal
    #[arg(long = "key-identity", value_name = "FILE")]
    pub key_identities: Vec<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  rebox unseal                                  (the key from Secret security/vault-unseal-key)\n  \
    rebox unseal --from vault-key.age -i ~/.config/age/key.txt --ssh-identity ~/.ssh/id_ed25519"
)]
pub struct UnsealArgs {
    /// Offline backup file holding the unseal key [default: the cluster's Secret]
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Identity that opens --from (age or SSH private key, repeatable); a passphrase-protected
    /// backup asks on the terminal
    #[arg(short = 'i', long = "identity", value_name = "FILE", requires = "from")]
    pub identities: Vec<PathBuf>,
    #[command(flatten)]
    pub conn: KeyConnArgs,
}

impl ConnArgs {
    /// Connection flags on top of rebox.toml's `[server]` table: a flag given wins.
    pub fn apply_to(&self, server: &mut crate::config::Server) {
        if let Some(h) = &self.host {
            server.host = h.clone();
        }
        if let Some(p) = self.port {
            server.port = Some(p);
        }
        if let Some(u) = &self.user {
            server.user = Some(u.clone());
        }
        if !self.identity.is_empty() {
            server.identity_files = self.identity.clone();
        }
        if let Some(k) = &self.known_hosts {
            server.known_hosts = Some(k.clone());
        }
        if let Some(t) = self.connect_timeout {
            server.connect_timeout_secs = t;
        }
    }
}
