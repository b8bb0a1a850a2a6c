//! Reading passphrases (and pasted key shares) from the terminal, never from arguments.
//!
//! Like the age CLI, prompts go to and answers come from `/dev/tty`, so standard input stays
//! free for the key itself (`printf %s "$KEY" | rebox key export --from-stdin -p …`).
//! Echo is switched off before the prompt is shown, so nothing typed appears on screen.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use rustix::termios::{self, LocalModes, OptionalActions};
use zeroize::{Zeroize, Zeroizing};

use crate::secret::SecretText;

/// Attempts allowed for a new passphrase (empty or mismatched) before giving up.
const NEW_PASSPHRASE_ATTEMPTS: usize = 3;

/// The controlling terminal, opened for one prompt.
struct Tty(File);

impl Tty {
    fn open(why: &str) -> Result<Tty> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map(Tty)
            .map_err(|_| {
                anyhow::anyhow!(
                    "{why} needs a terminal to type it on, and there is none; \
                     run rebox from a terminal, or use age/SSH keys (-r/-R to encrypt, -i to decrypt)"
                )
            })
    }

    fn say(&mut self, text: &str) -> Result<()> {
        self.0.write_all(text.as_bytes())?;
        self.0.flush()?;
        Ok(())
    }

    /// One line with echo off. `None` on end of input (Ctrl-D).
    fn read_hidden(&mut self, prompt: &str) -> Result<Option<SecretText>> {
        let original = termios::tcgetattr(&self.0).context("reading terminal settings")?;
        let mut quiet = original.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        // Echo off first, then the prompt: a fast typist (or a test) cannot be echoed.
        termios::tcsetattr(&self.0, OptionalActions::Now, &quiet)
            .context("switching terminal echo off")?;
        let result = self.say(prompt).and_then(|_| self.read_line());
        // Restore echo whatever happened, then end the prompt's line.
        let _ = termios::tcsetattr(&self.0, OptionalActions::Now, &original);
        let _ = self.say("\n");
        result
    }

    /// Reads byte by byte into a zeroizing buffer: no stray copies in a BufReader.
    fn read_line(&mut self) -> Result<Option<SecretText>> {
        let mut line = Zeroizing::new(Vec::with_capacity(256));
        let mut byte = [0u8; 1];
        loop {
            match self.0.read(&mut byte) {
                Ok(0) if line.is_empty() => return Ok(None),
                Ok(0) => break,
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading from the terminal"),
            }
        }
        byte.zeroize();
        while line.last() == Some(&b'\r') {
            line.pop();
        }
        let text = String::from_utf8(std::mem::take(&mut *line))
            .map_err(|_| anyhow::anyhow!("the typed text is not valid UTF-8"))?;
        Ok(Some(SecretText::new(text)))
    }
}

/// Asks for a new passphrase twice. Empty ones are refused; weak ones are warned about.
pub fn ask_new(what: &str) -> Result<SecretText> {
    let mut tty = Tty::open("a passphrase")?;
    for _ in 0..NEW_PASSPHRASE_ATTEMPTS {
        let Some(first) = tty.read_hidden(&format!("Passphrase for {what}: "))? else {
            bail!("no passphrase entered (end of input); nothing was written");
        };
        if first.expose().is_empty() {
            tty.say("An empty passphrase is refused: it would protect nothing. Try again.\n")?;
            continue;
        }
        let Some(second) = tty.read_hidden("Same passphrase again: ")? else {
            bail!("no passphrase entered (end of input); nothing was written");
        };
        if first != second {
            tty.say("The two passphrases differ. Try again.\n")?;
            continue;
        }
        if let Some(why) = weakness(first.expose()) {
            // On stderr too, so it is seen (and logged by whoever captures stderr).
            eprintln!(
                "warning: this passphrase is weak ({why}). Anyone who gets the file can try \
                 passphrases offline; prefer five or more random words."
            );
        }
        return Ok(first);
    }
    bail!(
        "no usable passphrase after {NEW_PASSPHRASE_ATTEMPTS} attempts (empty or not repeated \
         identically); nothing was written"
    )
}

/// Asks once for the passphrase of an existing file (or of an encrypted SSH key).
pub fn ask_existing(prompt: &str) -> Result<SecretText> {
    let mut tty = Tty::open("this file is passphrase-protected; the passphrase")?;
    match tty.read_hidden(prompt)? {
        Some(p) if !p.expose().is_empty() => Ok(p),
        _ => bail!("no passphrase entered"),
    }
}

/// Reads pasted key shares, one per line, until an empty line; nothing is echoed.
pub fn ask_shares() -> Result<Vec<SecretText>> {
    let mut tty = Tty::open("pasting the key")?;
    let mut shares = Vec::new();
    loop {
        // Each prompt is written after echo is off, so a fast paste is never shown.
        let prompt = if shares.is_empty() {
            "Paste the unseal key share(s), one per line (nothing is shown).\nShare 1: ".to_string()
        } else {
            format!("Share {} (or an empty line to finish): ", shares.len() + 1)
        };
        match tty.read_hidden(&prompt)? {
            Some(line) if !line.expose().trim().is_empty() => shares.push(line),
            _ => break,
        }
    }
    Ok(shares)
}

/// Why a passphrase is weak, if it is. A cheap heuristic, not an estimate of entropy.
pub fn weakness(p: &str) -> Option<&'static str> {
    // Zeroizing: these are copies of the passphrase.
    let chars: Zeroizing<Vec<char>> = Zeroizing::new(p.chars().collect());
    let mut distinct = chars.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if chars.len() < 12 {
        Some("shorter than 12 characters")
    } else if distinct.len() < 6 {
        Some("fewer than 6 different characters")
    } else if chars.iter().all(|c| c.is_ascii_digit()) {
        Some("digits only")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::weakness;

    #[test]
    fn key_passphrase_weakness_heuristic() {
        assert!(weakness("hunter2").is_some());
        assert!(weakness("aaaaaaaaaaaaaaaa").is_some());
        assert!(weakness("1234567890123456").is_some());
        assert!(weakness("correct horse battery staple").is_none());
    }
}
