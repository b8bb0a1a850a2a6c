//! The offline unseal-key backup: document format and age encryption (issue 3).
