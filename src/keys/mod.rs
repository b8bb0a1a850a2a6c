//! The offline unseal-key backup (issue 3): the document format, its age encryption, and
//! the careful handling of every secret on the way.
//!
//! - [`document`]: the versioned, human-readable TOML document with fingerprints.
//! - [`crypt`]: age encryption to passphrases, X25519 and SSH keys; decryption; clear errors.
//! - [`output`]: 0600, temp-file, fsync, verify, no-clobber rename.
//! - [`passphrase`]: prompts on `/dev/tty` with echo off.
//! - [`source`]: where the key comes from (standard input, or the cluster's Secret over SSH).
//! - [`secret`]: `SecretText`, the zeroizing, redacting string every secret lives in.

pub mod backup;
pub mod crypt;
pub mod document;
pub mod output;
pub mod passphrase;
pub mod secret;
pub mod source;

pub use document::BackupDocument;
pub use secret::SecretText;
pub use source::KeySource;
