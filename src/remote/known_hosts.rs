//! known_hosts: OpenSSH's host-key file, read and updated the way `ssh` does.
//!
//! Matching follows sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT": comma-separated patterns with `*`
//! and `?`, `!` negation, `[host]:port` for non-22 ports, hashed `|1|salt|hmac` names, and
//! `@revoked` markers. `@cert-authority` lines are ignored (rebox does not trust host CAs).
//! Parsing of each line is ssh-key's; only the matching and the rewrite are ours.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result};
use hmac::{KeyInit, Mac};
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::{HashAlg, PublicKey};

/// What known_hosts says about a server's key.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A line for this host holds exactly this key.
    Known,
    /// The host is not in the file.
    Unknown,
    /// The host is in the file with other keys; `lines` are their 1-based line numbers.
    Changed { lines: Vec<usize> },
    /// The key is marked `@revoked`.
    Revoked { line: usize },
}

/// The name a host is recorded under: `host` on port 22, `[host]:port` otherwise.
pub fn host_port_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// SHA256 fingerprint as OpenSSH prints it (`SHA256:…`, unpadded base64).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The default file, ~/.ssh/known_hosts.
pub fn default_path() -> Result<PathBuf> {
    let home = dirs::home_dir().context(
        "cannot find the home directory for ~/.ssh/known_hosts; pass --known-hosts FILE",
    )?;
    Ok(home.join(".ssh").join("known_hosts"))
}

/// Checks `key` for `host:port` against the file at `path` (a missing file knows nothing).
pub fn check(path: &Path, host: &str, port: u16, key: &PublicKey) -> Result<Verdict> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verdict::Unknown),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    for line in unreadable_lines(&text) {
        tracing::warn!(
            "{} line {line} is not a known_hosts entry rebox can read; it is ignored",
            path.display()
        );
    }
    Ok(check_text(&text, &host_port_name(host, port), key))
}

/// 1-based numbers of the lines that are neither blank, comments nor parsable entries.
fn unreadable_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && parse_line(l).is_none()
        })
        .map(|(i, _)| i + 1)
        .collect()
}

fn check_text(text: &str, name: &str, key: &PublicKey) -> Verdict {
    // OpenSSH lower-cases host names before matching and hashing them.
    let name = &name.to_ascii_lowercase();
    let mut known = false;
    let mut other_lines = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        let Some(entry) = parse_line(line) else {
            continue;
        };
        if !patterns_match(entry.host_patterns(), name) {
            continue;
        }
        match entry.marker() {
            Some(Marker::Revoked) if same_key(entry.public_key(), key) => {
                return Verdict::Revoked { line: idx + 1 };
            }
            Some(_) => continue,
            None if same_key(entry.public_key(), key) => known = true,
            None => other_lines.push(idx + 1),
        }
    }
    if known {
        Verdict::Known
    } else if other_lines.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Changed { lines: other_lines }
    }
}

/// Appends a line for `host:port` with `key`, creating the file (0600) and ~/.ssh if needed.
pub fn record(path: &Path, host: &str, port: u16, key: &PublicKey) -> Result<()> {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&entry_line(host, port, key)?);
    write_atomically(path, &text)
}

/// Takes `host:port` off the given 1-based lines (the old keys of a rebuilt server) and
/// records `key`. A line that also names other hosts keeps them (only this host's name is
/// removed from it); a line left naming no host goes.
pub fn replace(path: &Path, host: &str, port: u16, key: &PublicKey, lines: &[usize]) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = host_port_name(host, port).to_ascii_lowercase();
    let mut kept: String = text
        .lines()
        .enumerate()
        .filter_map(|(idx, l)| {
            if !lines.contains(&(idx + 1)) {
                return Some(format!("{l}\n"));
            }
            without_host(l, &name).map(|l| format!("{l}\n"))
        })
        .collect();
    kept.push_str(&entry_line(host, port, key)?);
    write_atomically(path, &kept)
}

/// `line` with the plain patterns matching `name` taken out of its host list; None when no
/// host is left (or the list is one hashed name, which cannot be split).
fn without_host(line: &str, name: &str) -> Option<String> {
    let mut fields: Vec<&str> = line.split_whitespace().collect();
    let at = usize::from(fields.first().is_some_and(|f| f.starts_with('@')));
    let hosts = fields.get(at)?;
    if hosts.starts_with('|') {
        return None;
    }
    let left: Vec<&str> = hosts
        .split(',')
        .filter(|p| p.starts_with('!') || !glob(p, name))
        .collect();
    if left.iter().all(|p| p.starts_with('!')) {
        return None;
    }
    let joined = left.join(",");
    fields[at] = &joined;
    Some(fields.join(" "))
}

fn entry_line(host: &str, port: u16, key: &PublicKey) -> Result<String> {
    let key = key.to_openssh().context("encoding the host key")?;
    Ok(format!("{} {}\n", host_port_name(host, port), key))
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    // A symlinked known_hosts (dotfiles) stays a symlink: the file it points to is replaced.
    let resolved;
    let path = if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        resolved = std::fs::canonicalize(path)
            .with_context(|| format!("following the symlink {}", path.display()))?;
        resolved.as_path()
    } else {
        path
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".known_hosts.")
        .tempfile_in(&dir)
        .with_context(|| format!("writing to {}", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    // Keep the original file's permissions (tempfile creates 0600, which suits a new file).
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(tmp.path(), meta.permissions())?;
    }
    tmp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn parse_line(line: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    // ssh-key wants single spaces between fields; OpenSSH accepts any blanks.
    let normalised = line.split_whitespace().collect::<Vec<_>>().join(" ");
    Entry::from_str(&normalised).ok()
}

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

fn patterns_match(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.chain_update(name.as_bytes()).verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let mut matched = false;
            for p in list {
                if let Some(negated) = p.strip_prefix('!') {
                    if glob(negated, name) {
                        return false;
                    }
                } else if glob(p, name) {
                    matched = true;
                }
            }
            matched
        }
    }
}

/// OpenSSH's `match_pattern`: `*` any run, `?` one char, case-insensitive for host names.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINuCtxSZY4xjZEHhQBrbBmSsuwsz5/92DTn+i34Q9ai8";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH8aLS/s8siT0jbBc1FwmOGHKSD+8UGujFBLhXHdCRzD";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn hashed(name: &str) -> String {
        let salt = [7u8; 20];
        let mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt)
            .unwrap()
            .chain_update(name.as_bytes())
            .finalize()
            .into_bytes();
        let b64 = base64::engine::general_purpose::STANDARD;
        format!("|1|{}|{}", b64.encode(salt), b64.encode(mac))
    }

    #[test]
    fn plain_entry_known_unknown_and_changed() {
        let text = format!("# comment\nserver.lan,10.0.0.5 {KEY_A}\n");
        assert_eq!(check_text(&text, "10.0.0.5", &key(KEY_A)), Verdict::Known);
        assert_eq!(check_text(&text, "10.0.0.6", &key(KEY_A)), Verdict::Unknown);
        assert_eq!(
            check_text(&text, "server.lan", &key(KEY_B)),
            Verdict::Changed { lines: vec![2] }
        );
    }

    #[test]
    fn hashed_names_are_matched_lower_cased_as_openssh_writes_them() {
        let text = format!("{} {KEY_A}\n", hashed("nas.lan"));
        assert_eq!(check_text(&text, "NAS.lan", &key(KEY_A)), Verdict::Known);
    }

    #[test]
    fn unreadable_lines_are_found() {
        let text = format!("# c\n\n10.0.0.5 {KEY_A}\nnot an entry\n");
        assert_eq!(unreadable_lines(&text), vec![4]);
    }

    #[test]
    fn replacing_a_key_keeps_the_other_hosts_of_a_shared_line() {
        assert_eq!(
            without_host(&format!("10.0.0.5,nas.lan {KEY_A}"), "10.0.0.5").as_deref(),
            Some(format!("nas.lan {KEY_A}").as_str())
        );
        assert_eq!(without_host(&format!("10.0.0.5 {KEY_A}"), "10.0.0.5"), None);
        assert_eq!(
            without_host(&format!("@cert-authority 10.0.0.5,b {KEY_A}"), "10.0.0.5").as_deref(),
            Some(format!("@cert-authority b {KEY_A}").as_str())
        );
    }

    #[test]
    fn a_symlinked_known_hosts_stays_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles-known_hosts");
        std::fs::write(&real, "").unwrap();
        let link = dir.path().join("known_hosts");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        record(&link, "10.0.0.5", 22, &key(KEY_A)).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(std::fs::read_to_string(&real)
            .unwrap()
            .contains("10.0.0.5 "));
    }

    #[test]
    fn hashed_entries_match_only_their_host() {
        let text = format!("{} {KEY_A}\n", hashed("10.0.0.5"));
        assert_eq!(check_text(&text, "10.0.0.5", &key(KEY_A)), Verdict::Known);
        assert_eq!(check_text(&text, "10.0.0.7", &key(KEY_A)), Verdict::Unknown);
        let port = format!("{} {KEY_A}\n", hashed("[10.0.0.5]:2222"));
        assert_eq!(
            check_text(&port, "[10.0.0.5]:2222", &key(KEY_A)),
            Verdict::Known
        );
        assert_eq!(check_text(&port, "10.0.0.5", &key(KEY_A)), Verdict::Unknown);
    }

    #[test]
    fn wildcards_negation_and_revoked() {
        let text = format!("*.lan,!evil.lan {KEY_A}\n@revoked * {KEY_B}\n");
        assert_eq!(check_text(&text, "box.lan", &key(KEY_A)), Verdict::Known);
        assert_eq!(check_text(&text, "evil.lan", &key(KEY_A)), Verdict::Unknown);
        assert_eq!(
            check_text(&text, "box.lan", &key(KEY_B)),
            Verdict::Revoked { line: 2 }
        );
    }

    #[test]
    fn replace_removes_old_lines_and_records_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, format!("other {KEY_B}\n10.0.0.5 {KEY_A}\n")).unwrap();
        let Verdict::Changed { lines } = check(&path, "10.0.0.5", 22, &key(KEY_B)).unwrap() else {
            panic!("expected a changed key")
        };
        replace(&path, "10.0.0.5", 22, &key(KEY_B), &lines).unwrap();
        assert_eq!(
            check(&path, "10.0.0.5", 22, &key(KEY_B)).unwrap(),
            Verdict::Known
        );
        assert_eq!(
            check(&path, "10.0.0.5", 22, &key(KEY_A)).unwrap(),
            Verdict::Changed { lines: vec![2] }
        );
        assert_eq!(
            check(&path, "other", 22, &key(KEY_B)).unwrap(),
            Verdict::Known
        );
    }
}
