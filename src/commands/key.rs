//! `rebox key export | verify | show`: the age-encrypted offline backup of the unseal key.
//!
//! Parse flags, read the shares (cluster or stdin), call `crate::keys`, print. Secrets only
//! ever pass through `SecretText` and zeroizing buffers; what is printed comes from the
//! backup's summary (fingerprints), never from key text.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};

use crate::cli::{
    ConnArgs, GlobalArgs, KeyCommand, KeyConnArgs, KeyExportArgs, KeyShowArgs, KeyVerifyArgs,
};
use crate::config::Config;
use crate::keys::report::{self, Against, Comparison, Verified};
use crate::keys::{backup, export, input};
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
    // Everything that can be checked without the key or a passphrase comes first.
    let cluster = match &args.cluster {
        Some(c) => c.clone(),
        None => Config::load(global.config.as_deref())?.0.cluster_name,
    };
    let prepared = export::prepare(export::Options {
        cluster,
        output: &args.output,
        recipients: &args.recipients,
        recipients_files: &args.recipients_files,
        identity_files: &args.identities,
        passphrase: args.passphrase,
        paper: args.paper,
        force: args.force,
        armor: !args.binary,
        threshold: args.threshold,
        share_count: args.share_count,
        extras: input::extras(&args.extra_from_env, &args.extra_from_file)?,
    })?;
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
    let (summary, written) = prepared.write(shares)?;
    print(global, &summary, None, &written)?;
    Ok(ExitCode::SUCCESS)
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
    let secret = match args.against_cluster {
        true => Some(cluster_secret(global, &args.conn)?),
        false => None,
    };
    let (doc, how) = backup::open_file(&args.file, &args.identities)?;
    let summary = doc.summary();
    drop(doc);
    let verified = Verified {
        file: &args.file,
        protected_by: how,
    };
    let Some(secret) = secret else {
        print(global, &summary, Some(&verified), &[])?;
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
    let at = Against {
        secret: secret.describe(),
        key: secret.key().into(),
        server: secret.target.addr(),
    };
    let cmp = Comparison::new(&summary, cluster, at);
    if global.json {
        let mut v = report::summary_json(&summary, Some(&verified), &[]);
        v["against_cluster"] = cmp.json();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", report::summary_text(&summary, Some(&verified)));
        print!("{}", cmp.text(&summary));
    }
    if cmp.matches {
        return Ok(ExitCode::SUCCESS);
    }
    crate::ui::report_error(&cmp.mismatch(&args.file));
    Ok(ExitCode::from(MISMATCH))
}

fn show(args: KeyShowArgs) -> Result<ExitCode> {
    let f = args.file.display();
    if !args.reveal {
        bail!(crate::next::hinted(
            "refusing to print the unseal key without --reveal",
            format!("to check the backup without printing the key: `rebox key verify {f}`; to print it: `rebox key show --reveal {f}`")
        ));
    }
    let (doc, _) = backup::open_file(&args.file, &args.identities)?;
    let secrets = doc
        .secrets(args.extra.as_deref())
        .map_err(|e| anyhow!("{f} {e}"))?;
    if std::io::stdout().is_terminal() {
        eprintln!(
            "warning: printing a secret to the terminal; clear the screen and scrollback afterwards \
             (pipe it instead: `rebox key show --reveal {f} | …`)"
        );
    }
    let mut stdout = std::io::stdout().lock();
    for s in secrets {
        stdout.write_all(s.expose().as_bytes())?;
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The metadata-and-fingerprints report (stdout), human or `--json`. Never the key.
fn print(
    global: &GlobalArgs,
    s: &crate::keys::document::Summary,
    verified: Option<&Verified<'_>>,
    written: &[(String, String)],
) -> Result<()> {
    let json = report::summary_json(s, verified, written);
    super::emit(global, &json, || report::summary_text(s, verified))
}
