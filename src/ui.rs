//! Terminal output: logging setup, error reports, confirmations and progress bars.
//!
//! Everything a human reads goes to stderr except reports and `--json` documents, which go
//! to stdout so scripts can pipe them. Nothing here ever receives a secret.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Logs go to stderr; `-v` info, `-vv` debug, `-vvv` trace. `REBOX_LOG` overrides.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("REBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(verbose >= 2)
        .try_init();
}

/// Prints an error and its cause chain, cargo-style.
pub fn report_error(err: &anyhow::Error) {
    let mut out = format!("error: {err}");
    for cause in err.chain().skip(1) {
        out.push_str(&format!("\n  caused by: {cause}"));
    }
    eprintln!("{out}");
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
