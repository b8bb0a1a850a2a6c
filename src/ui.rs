//! Terminal output: logging setup, error reports, confirmations and progress bars.
//!
//! Everything a human reads goes to stderr except reports and `--json` documents, which go
//! to stdout so scripts can pipe them. Nothing here ever receives a secret.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// The log directive that silences kube-client at every level, REBOX_LOG included.
pub const KUBE_CLIENT_OFF: &str = "kube_client=off";

/// Logs go to stderr; `-v` info, `-vv` debug, `-vvv` trace. `REBOX_LOG` overrides.
pub fn init_logging(verbose: u8) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter(verbose))
        .with_writer(std::io::stderr)
        .with_target(verbose >= 2)
        .try_init();
}

/// The filter for `-v` count `verbose` (or REBOX_LOG), kube-client always silenced.
fn log_filter(verbose: u8) -> tracing_subscriber::EnvFilter {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    tracing_subscriber::EnvFilter::try_from_env("REBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level))
        // kube-client logs whole response bodies it cannot parse (a Secret among them): never.
        .add_directive(KUBE_CLIENT_OFF.parse().expect("a valid directive"))
}

/// Prints an error and its cause chain, cargo-style, then the one next step (see
/// [`crate::next`]) last.
pub fn report_error(err: &anyhow::Error) {
    eprintln!("{}", error_report(err));
}

/// The text [`report_error`] prints.
pub fn error_report(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for (i, cause) in err.chain().enumerate() {
        let text = cause.to_string();
        let (message, _) = crate::next::split(&text);
        if i == 0 {
            out.push_str(&format!("error: {message}"));
        } else {
            out.push_str(&format!("\n  caused by: {message}"));
        }
    }
    if let Some(next) = crate::next::of(err) {
        out.push_str(&format!("\n  next: {next}"));
    }
    out
}

/// True when a human can answer prompts.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks a yes/no question; `--yes` answers yes, a non-interactive run without `--yes` answers no.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !interactive() {
        return Ok(false);
    }
    Ok(dialoguer::Confirm::new()
        .with_prompt(question)
        .default(false)
        .interact()?)
}

/// A line typed by the operator; `None` under `--yes` or without a terminal.
pub fn ask_text(prompt: &str, yes: bool) -> anyhow::Result<Option<String>> {
    if yes || !interactive() {
        return Ok(None);
    }
    Ok(Some(
        dialoguer::Input::new()
            .with_prompt(prompt)
            .interact_text()?,
    ))
}

/// A secret typed by the operator, not echoed; `None` under `--yes` or without a terminal.
pub fn ask_secret(prompt: &str, yes: bool) -> anyhow::Result<Option<crate::secret::SecretText>> {
    if yes || !interactive() {
        return Ok(None);
    }
    let value = dialoguer::Password::new().with_prompt(prompt).interact()?;
    Ok(Some(crate::secret::SecretText::new(value)))
}

/// `rebox init`'s questions: the few values that differ per lab, the defaults offered.
pub fn ask_init(c: &mut crate::config::Config) -> anyhow::Result<()> {
    use dialoguer::Input;
    c.cluster_name = Input::new()
        .with_prompt("Cluster name")
        .default(c.cluster_name.clone())
        .interact_text()?;
    c.server.host = Input::new()
        .with_prompt("Server host (name, address or ~/.ssh/config alias)")
        .allow_empty(true)
        .interact_text()?;
    c.server.user = Some(
        Input::new()
            .with_prompt("SSH user with passwordless sudo")
            .default("homelab".to_string())
            .interact_text()?,
    );
    c.nas.backup_target = Input::new()
        .with_prompt("Longhorn backup target on the NAS")
        .default(c.nas.backup_target.clone())
        .interact_text()?;
    c.argocd.repo_url = Input::new()
        .with_prompt("Git repository for Argo CD")
        .allow_empty(true)
        .interact_text()?;
    c.argocd.path = Input::new()
        .with_prompt("Path of the root app in the repository")
        .default(c.argocd.path.clone())
        .interact_text()?;
    Ok(())
}

/// The terminal as the SSH layer's [`crate::remote::Asker`].
pub struct Terminal;

impl crate::remote::Asker for Terminal {
    fn new_host_key(&self, host: &str, fingerprint: &str) -> anyhow::Result<bool> {
        eprintln!(
            "The authenticity of host {host} can't be established.\nIts host key fingerprint is {fingerprint}."
        );
        Ok(dialoguer::Confirm::new()
            .with_prompt("Does it match the fingerprint shown on the server's console? Record it and continue")
            .default(false)
            .interact()?)
    }

    fn key_passphrase(&self, path: &std::path::Path) -> anyhow::Result<zeroize::Zeroizing<String>> {
        Ok(zeroize::Zeroizing::new(
            dialoguer::Password::new()
                .with_prompt(format!("Passphrase for {}", path.display()))
                .interact()?,
        ))
    }
}

/// A byte-count progress bar, hidden when stderr is not a terminal.
pub fn bytes_bar(len: u64, what: &str) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_client_never_logs_even_at_trace() {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(log_filter(3));
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(target: "rebox::site", tracing::Level::TRACE));
            assert!(!tracing::enabled!(target: "kube_client::client", tracing::Level::ERROR));
        });
    }
    use crate::next::hinted;

    #[test]
    fn error_report_prints_one_next_step_last() {
        let inner = anyhow::anyhow!("Vault refused the key\n  next: check the backup");
        let err = inner.context(hinted(
            "unsealing Vault",
            "use the offline backup of THIS Vault",
        ));
        let text = error_report(&err);
        assert_eq!(text.matches("next:").count(), 1, "{text}");
        assert!(
            text.ends_with("\n  next: use the offline backup of THIS Vault"),
            "{text}"
        );
        assert!(text.contains("caused by: Vault refused the key"), "{text}");
    }
}
