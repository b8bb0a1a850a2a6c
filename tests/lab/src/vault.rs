//! Vault stand-in (issue 4).
