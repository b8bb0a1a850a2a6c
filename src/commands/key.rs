//! `rebox key export | verify | show`: the age-encrypted offline backup of the unseal key.
//!
//! Thin orchestration over `crate::keys`: parse flags, check every output path before
//! asking anything, encrypt, write, read back and decrypt, then commit. Secrets only ever
//! pass through `SecretText` and zeroizing buffers; logs carry paths, counts and
//! fingerprints, never key text.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use zeroize::Zeroizing;

use crate::cli::{
    ConnArgs, GlobalArgs, KeyCommand, KeyConnArgs, KeyExportArgs, KeyShowArgs, KeyVerifyArgs,
};
use crate::config::Config;
use crate::keys::crypt::{self, NamedRecipient};
use crate::keys::document::{self, Summary};

use crate::keys::{export, input, passphrase, BackupDocument};
use crate::secret::SecretText;
use crate::site::SecretLocation;

/// Exit status of `verify --against-cluster` when the backup and the cluster disagree
/// (as `preflight` uses 2 for "checks ran and one failed").
const MISMATCH: u8 = 2;

pub async fn run(global: &GlobalArgs, cmd: KeyCommand) -> Result<ExitCode> {
    match cmd {
        KeyCommand::Export(args) => export(global, args).await,
        KeyCommand::Verify(args) => verify(global, args).await,
        KeyCommand::Show(args) => show(args),
    }
}

async fn export(global: &GlobalArgs, args: KeyExportArgs) -> Result<ExitCode> {
    // 1. Everything that can be checked without the key or a passphrase comes first.
    let recipients = collect_recipients(&args)?;
    if recipients.is_empty() && !args.passphrase {
        bail!(
            "no recipients: pass -r age1… or -R FILE (e.g. -R ~/.ssh/id_ed25519.pub) to encrypt \
             to keys, and/or -p for a passphrase; nothing was written"
        );
    }
    let identities = load_identities(&args.identities)?;
    if !args.identities.is_empty() && recipients.is_empty() {
        eprintln!("note: -i is only used to read back key-encrypted files; the passphrase file is checked with the passphrase");
    }
    let cluster = match &args.cluster {
        Some(c) => c.clone(),
        None => Config::load(global.config.as_deref())?.0.cluster_name,
    };
    let extras = collect_extras(&args)?;
    let targets = export::plan(
        &args.output,
        args.passphrase,
        !recipients.is_empty(),
        args.paper,
        args.force,
    )?;

    // 2. The key.
    let shares = if args.from_stdin {
        input::read_stdin()?
    } else {
        let c = cluster_secret(global, &args.conn)?;
        let (what, addr) = (c.describe(), c.target.addr());
        eprintln!(
            "reading the unseal key from Secret {what} (key `{}`) on {addr}",
            c.key()
        );
        c.read().await.with_context(|| {
            format!("cannot read the unseal key from Secret {what} on {addr}; nothing was written (a key you hold yourself can be given with --from-stdin)")
        })?
    };
    let given = shares.len() as u32;
    let share_count = args
        .share_count
        .unwrap_or(given.max(args.threshold.unwrap_or(0)));
    let threshold = args.threshold.unwrap_or(given);
    let doc = BackupDocument::new(&cluster, threshold, share_count, shares, extras)
        .context("cannot build the backup document; nothing was written")?;
    if given < threshold {
        eprintln!(
            "warning: this backup holds {given} share(s) but Vault needs {threshold}; \
             it cannot unseal Vault on its own"
        );
    }
    let text = doc.to_text()?;
    // What we write must be what we can read: parse our own output before encrypting it.
    let expected = BackupDocument::parse(text.as_bytes())
        .map_err(|e| anyhow!("internal error, refusing to write: {e}"))?
        .summary();
    tracing::info!(cluster = %cluster, shares = given, threshold, share_count, "backup document built");

    // 3. Encrypt, write, read back, decrypt; nothing is visible until every file checks out.
    let pass = if args.passphrase {
        Some(passphrase::ask_new("the backup file")?)
    } else {
        None
    };
    let reports = export::write(
        text.as_bytes(),
        &expected,
        targets,
        &export::Protect {
            recipients: &recipients,
            pass: pass.as_ref(),
            identities: &identities,
            identity_files: &args.identities,
            armor: !args.binary,
        },
    )?;
    drop(text);
    print_summary(global, &expected, None, &reports)?;
    Ok(ExitCode::SUCCESS)
}

/// Every `-r` and `-R`, parsed; errors say which flag was wrong.
fn collect_recipients(args: &KeyExportArgs) -> Result<Vec<NamedRecipient>> {
    let mut out = Vec::new();
    for (n, r) in args.recipients.iter().enumerate() {
        out.push(crypt::parse_recipient(r).with_context(|| format!("-r recipient #{}", n + 1))?);
    }
    for f in &args.recipients_files {
        out.extend(crypt::read_recipients_file(f)?);
    }
    Ok(out)
}

fn load_identities(paths: &[PathBuf]) -> Result<Vec<Box<dyn age::Identity>>> {
    let mut ids = Vec::new();
    for p in paths {
        ids.extend(crypt::load_identity_file(p)?);
    }
    Ok(ids)
}

/// `--extra-from-env NAME=VAR` and `--extra-from-file NAME=FILE`.
fn collect_extras(args: &KeyExportArgs) -> Result<Vec<(String, SecretText)>> {
    let mut out = Vec::new();
    let split = |spec: &str, flag: &str| -> Result<(String, String)> {
        let (name, from) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("{flag} expects NAME=…, got `{spec}`"))?;
        if !document::valid_name(name) {
            bail!("{flag}: `{name}` is not a valid secret name (letters, digits, '-', '_', '.')");
        }
        Ok((name.to_string(), from.to_string()))
    };
    for spec in &args.extra_from_env {
        let (name, var) = split(spec, "--extra-from-env")?;
        let value = Zeroizing::new(std::env::var(&var).map_err(|_| {
            anyhow!("--extra-from-env {name}: environment variable {var} is not set (or not UTF-8)")
        })?);
        out.push((name, SecretText::new(value.trim().to_owned())));
    }
    for spec in &args.extra_from_file {
        let (name, file) = split(spec, "--extra-from-file")?;
        let value = Zeroizing::new(
            std::fs::read_to_string(&file)
                .with_context(|| format!("--extra-from-file {name}: cannot read {file}"))?,
        );
        out.push((name, SecretText::new(value.trim().to_owned())));
    }
    Ok(out)
}

/// Where the cluster's unseal key Secret is, from rebox.toml and the connection flags.
fn cluster_secret(global: &GlobalArgs, conn: &KeyConnArgs) -> Result<SecretLocation> {
    let (config, target, policy) = super::connection_settings(global, &ConnArgs::from(conn))?;
    Ok(SecretLocation {
        config,
        target,
        policy,
    })
}

async fn verify(global: &GlobalArgs, args: KeyVerifyArgs) -> Result<ExitCode> {
    // Settings first, so a config or flag error comes before any passphrase prompt.
    let secret = if args.against_cluster {
        Some(cluster_secret(global, &args.conn)?)
    } else {
        None
    };
    let (doc, how) = open_backup(&args.file, &args.identities)?;
    let summary = doc.summary();
    drop(doc);
    let Some(secret) = secret else {
        print_summary(global, &summary, Some((&args.file, how)), &[])?;
        return Ok(ExitCode::SUCCESS);
    };
    let cluster: Vec<String> = secret
        .read()
        .await
        .with_context(|| {
            format!(
                "cannot read Secret {} on {}: the backup {} itself is valid, but it could not \
                 be compared with the cluster",
                secret.describe(),
                secret.target.addr(),
                args.file.display()
            )
        })?
        .iter()
        .map(|s| s.sha256_hex())
        .collect();
    let cmp = Comparison::new(&summary, &cluster);
    if global.json {
        let mut v = serde_json::to_value(&summary)?;
        v["file"] = args.file.display().to_string().into();
        v["protected_by"] = how.into();
        v["valid"] = true.into();
        v["against_cluster"] = serde_json::json!({
            "secret": secret.describe(),
            "key": secret.key(),
            "server": secret.target.addr(),
            "cluster_shares": cluster,
            "matches": cmp.matches,
            "only_in_backup": cmp.only_in_backup,
            "only_in_cluster": cmp.only_in_cluster,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_summary(global, &summary, Some((&args.file, how)), &[])?;
        print_comparison(&secret, &summary, &cluster, &cmp)?;
    }
    if cmp.matches {
        tracing::info!(secret = %secret.describe(), "backup matches the cluster");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: the backup {} does not hold the key in Secret {} on {}.\n  \
             next: if the cluster's key was rotated, make a new backup from it \
             (`rebox key export --host … -o NEW.age`, then `rebox key verify NEW.age --against-cluster`); \
             if the backup is the right key, the Secret is wrong: `rebox doctor` checks it",
            args.file.display(),
            secret.describe(),
            secret.target.addr()
        );
        Ok(ExitCode::from(MISMATCH))
    }
}

/// The backup's share fingerprints set against the cluster's.
struct Comparison {
    /// Every share in the cluster's Secret is in the backup, and the backup holds no share
    /// the cluster's key does not (the same key, whatever the order).
    matches: bool,
    only_in_backup: Vec<String>,
    only_in_cluster: Vec<String>,
}

impl Comparison {
    fn new(backup: &Summary, cluster: &[String]) -> Self {
        let b: Vec<String> = backup
            .shares
            .iter()
            .map(|f| f.sha256.to_ascii_lowercase())
            .collect();
        let only_in_backup: Vec<String> =
            b.iter().filter(|f| !cluster.contains(f)).cloned().collect();
        let only_in_cluster: Vec<String> =
            cluster.iter().filter(|f| !b.contains(f)).cloned().collect();
        Comparison {
            matches: only_in_backup.is_empty() && only_in_cluster.is_empty() && !cluster.is_empty(),
            only_in_backup,
            only_in_cluster,
        }
    }
}

/// Both fingerprint lists and the verdict (stdout). Never a key.
fn print_comparison(
    secret: &SecretLocation,
    s: &Summary,
    cluster: &[String],
    cmp: &Comparison,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "compared with Secret {} (key `{}`) on {}:",
        secret.describe(),
        secret.key(),
        secret.target.addr()
    )?;
    writeln!(out, "  backup shares   ({})", s.shares.len())?;
    for f in &s.shares {
        let mark = if cmp.only_in_backup.contains(&f.sha256.to_ascii_lowercase()) {
            "  (not in the cluster)"
        } else {
            ""
        };
        writeln!(out, "    {:<13} sha256:{}{mark}", f.name, f.sha256)?;
    }
    writeln!(out, "  cluster shares  ({})", cluster.len())?;
    for (n, fp) in cluster.iter().enumerate() {
        let mark = if cmp.only_in_cluster.contains(fp) {
            "  (not in the backup)"
        } else {
            ""
        };
        writeln!(
            out,
            "    {:<13} sha256:{fp}{mark}",
            format!("line {}", n + 1)
        )?;
    }
    if cmp.matches {
        writeln!(
            out,
            "MATCH: the backup holds exactly the cluster's unseal key"
        )?;
    } else {
        writeln!(
            out,
            "MISMATCH: the backup and the cluster's unseal key differ"
        )?;
    }
    Ok(())
}

fn show(args: KeyShowArgs) -> Result<ExitCode> {
    let f = args.file.display();
    if !args.reveal {
        bail!(
            "refusing to print the unseal key without --reveal. To check the backup without \
             printing the key: `rebox key verify {f}`; to print it: `rebox key show --reveal {f}`"
        );
    }
    let (doc, _) = open_backup(&args.file, &args.identities)?;
    let mut secrets: Vec<&SecretText> = match &args.extra {
        None => doc.unseal.shares.iter().map(|s| &s.key).collect(),
        Some(name) => {
            let e = doc.extra.iter().find(|e| &e.name == name).ok_or_else(|| {
                let names: Vec<&str> = doc.extra.iter().map(|e| e.name.as_str()).collect();
                anyhow!(
                    "{f} holds no extra secret named `{name}` (it holds: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )
            })?;
            vec![&e.value]
        }
    };
    if std::io::stdout().is_terminal() {
        eprintln!(
            "warning: printing a secret to the terminal; clear the screen and scrollback afterwards \
             (pipe it instead: `rebox key show --reveal {f} | …`)"
        );
    }
    let mut stdout = std::io::stdout().lock();
    for s in secrets.drain(..) {
        stdout.write_all(s.expose().as_bytes())?;
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Reads, decrypts and fully checks a backup file. Returns how it was protected.
pub(super) fn open_backup(
    path: &Path,
    identity_paths: &[PathBuf],
) -> Result<(BackupDocument, &'static str)> {
    crate::keys::backup::open_file(path, identity_paths)
}

/// The metadata-and-fingerprints report (stdout), human or `--json`. Never the key.
fn print_summary(
    global: &GlobalArgs,
    s: &Summary,
    verified: Option<(&Path, &str)>,
    written: &[(String, String)],
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if global.json {
        let mut v = serde_json::to_value(s)?;
        if let Some((file, how)) = verified {
            v["file"] = file.display().to_string().into();
            v["protected_by"] = how.into();
            v["valid"] = true.into();
        }
        if !written.is_empty() {
            v["written"] = written
                .iter()
                .map(|(f, c)| serde_json::json!({ "file": f, "check": c }))
                .collect();
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    if let Some((file, how)) = verified {
        writeln!(out, "{}: a valid rebox unseal-key backup", file.display())?;
        writeln!(out, "  protected by    {how}")?;
    } else {
        writeln!(
            out,
            "backup written (metadata and fingerprints; the key is not shown):"
        )?;
    }
    writeln!(out, "  format version  {}", s.format_version)?;
    writeln!(out, "  cluster         {}", s.cluster)?;
    writeln!(
        out,
        "  created         {} by {}",
        s.created_at, s.created_by
    )?;
    writeln!(
        out,
        "  unseal          {} of {} shares needed; this backup holds {}",
        s.threshold,
        s.share_count,
        s.shares.len()
    )?;
    for f in s.shares.iter().chain(&s.extra) {
        writeln!(out, "  {:<15} sha256:{}", f.name, f.sha256)?;
    }
    Ok(())
}
