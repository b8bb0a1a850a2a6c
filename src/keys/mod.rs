//! The offline unseal-key backup (issue 3): the document format, its age encryption, and
//! the careful handling of every secret on the way.
//!
//! - [`document`]: the versioned, human-readable TOML document with fingerprints.
//! - [`crypt`]: age encryption to passphrases, X25519 and SSH keys; decryption; clear errors.
//! - [`export`]: writing the backup files: plan, encrypt, read back, paper page, commit.
//! - [`output`]: 0600, temp-file, fsync, verify, no-clobber rename.
//! - [`passphrase`]: prompts on `/dev/tty` with echo off.
//! - [`input`]: shares as text: parsed one per line, or read from standard input.

pub mod backup;
pub mod crypt;
pub mod document;
pub mod export;
pub mod input;
pub mod output;
pub mod passphrase;

pub use document::BackupDocument;
