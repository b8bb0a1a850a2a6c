//! Secrets given to rebox as text: unseal key shares parsed from one share per line (the
//! format of the unseal Secret, and of `vault operator init` output pasted as is) or read
//! from standard input, and the extra secrets of a backup from environment variables or
//! files. The cluster's Secret is read by `crate::site`; this module has no transport.

use std::io::{IsTerminal, Read};

use anyhow::{anyhow, bail, Context, Result};
use zeroize::Zeroizing;

use super::{document, passphrase};
use crate::secret::SecretText;

/// `--extra-from-env NAME=VAR` and `--extra-from-file NAME=FILE`: each value trimmed, never
/// echoed in an error.
pub fn extras(from_env: &[String], from_file: &[String]) -> Result<Vec<(String, SecretText)>> {
    let split = |spec: &str, flag: &str| -> Result<(String, String)> {
        let (name, from) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("{flag} expects NAME=…, got `{spec}`"))?;
        if !document::valid_name(name) {
            bail!("{flag}: `{name}` is not a valid secret name (letters, digits, '-', '_', '.')");
        }
        Ok((name.to_string(), from.to_string()))
    };
    let mut out = Vec::new();
    for spec in from_env {
        let (name, var) = split(spec, "--extra-from-env")?;
        let value = Zeroizing::new(std::env::var(&var).map_err(|_| {
            anyhow!("--extra-from-env {name}: environment variable {var} is not set (or not UTF-8)")
        })?);
        out.push((name, SecretText::new(value.trim().to_owned())));
    }
    for spec in from_file {
        let (name, file) = split(spec, "--extra-from-file")?;
        let value = Zeroizing::new(
            std::fs::read_to_string(&file)
                .with_context(|| format!("--extra-from-file {name}: cannot read {file}"))?,
        );
        out.push((name, SecretText::new(value.trim().to_owned())));
    }
    Ok(out)
}

/// Largest key input accepted on stdin; Vault shares are tens of bytes each.
const MAX_STDIN_BYTES: u64 = 64 * 1024;

/// Reads the shares from standard input: a pipe, or pasted on the terminal without echo.
/// Each is checked to look like a share; errors never echo the input.
pub fn read_stdin() -> Result<Vec<SecretText>> {
    let shares = if std::io::stdin().is_terminal() {
        passphrase::ask_shares()?
    } else {
        let mut raw = Zeroizing::new(Vec::with_capacity(MAX_STDIN_BYTES as usize + 1));
        std::io::stdin()
            .take(MAX_STDIN_BYTES + 1)
            .read_to_end(&mut raw)
            .context("reading the key from standard input")?;
        if raw.len() as u64 > MAX_STDIN_BYTES {
            bail!(
                "standard input is larger than {MAX_STDIN_BYTES} bytes; that is not an unseal key"
            );
        }
        let text = std::str::from_utf8(&raw).map_err(|_| {
            anyhow::anyhow!(
                "standard input is not text; expected the unseal key share(s), one per line"
            )
        })?;
        parse_shares(text)?
    };
    if shares.is_empty() {
        bail!("no unseal key on standard input; pipe it in, one share per line");
    }
    Ok(shares)
}

/// Splits text into shares: one per line, blank lines ignored, and the `Unseal Key N: `
/// prefix of `vault operator init` output accepted so that output can be pasted as is.
pub fn parse_shares(text: &str) -> Result<Vec<SecretText>> {
    let mut shares = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut s = line.trim();
        if s.is_empty() {
            continue;
        }
        if let Some(rest) = s.strip_prefix("Unseal Key ") {
            if let Some((num, key)) = rest.split_once(':') {
                if num.trim().chars().all(|c| c.is_ascii_digit()) {
                    s = key.trim();
                }
            }
        }
        if s.is_empty()
            || !s.is_ascii()
            || s.chars()
                .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            bail!(
                "line {} of the key input is not an unseal key share (it contains spaces or \
                 unusual characters); give one share per line, nothing else",
                n + 1
            );
        }
        shares.push(SecretText::new(s.to_owned()));
    }
    Ok(shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shares_parse_one_per_line_and_vault_init_output() {
        let s = parse_shares("abc\n\n  def  \nUnseal Key 3: ghi\n").unwrap();
        let got: Vec<&str> = s.iter().map(|s| s.expose()).collect();
        assert_eq!(got, ["abc", "def", "ghi"]);
    }

    #[test]
    fn key_shares_with_spaces_are_refused_without_echo() {
        let err = parse_shares("Initial Root Token: hvs.secretvalue\n").unwrap_err();
        assert!(!err.to_string().contains("hvs.secretvalue"));
    }
}
