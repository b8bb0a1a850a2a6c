//! The offline unseal-key backup (issue 3): the document format, its age encryption, and
//! the careful handling of every secret on the way.
//!
//! - [`document`]: the versioned, human-readable TOML document with fingerprints.
//! - [`crypt`]: age encryption to passphrases, X25519 and SSH keys; decryption; clear errors.
//! - [`export`]: writing the backup files: plan, encrypt, read back, paper page, commit.
//! - [`output`]: 0600, temp-file, fsync, verify, no-clobber rename.
//! - [`passphrase`]: prompts on `/dev/tty` with echo off.
//! - [`input`]: secrets as text: shares one per line or from stdin, extras from env or files.
//! - [`report`]: the printable summary of a backup and its comparison with the cluster.

pub mod backup;
pub mod crypt;
pub mod document;
pub mod export;
pub mod input;
pub mod output;
pub mod passphrase;
pub mod report;

pub use document::BackupDocument;
