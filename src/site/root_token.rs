//! Root tokens never outlive the run that made them. rebox needs one now and then (to set
//! Vault up for ESO): the one Vault's init answers with, or a short-lived one made from the
//! unseal key with `sys/generate-root`. The token itself is never written anywhere; what is
//! written, on the server (`/var/lib/rebox/vault-root-tokens.json`, root-only), is a record:
//! an entry made BEFORE Vault can mint the token, completed with the token's accessor (which
//! names a token without being one) as soon as Vault can look it up, removed once the token
//! is revoked. A run killed in between leaves its entry; the next token rebox gets first
//! revokes what the record names (`auth/token/revoke-accessor`) and says so. An entry
//! without an accessor (killed before the lookup) stands for the root tokens Vault made
//! since the entry's time, which are revoked the same way.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Site;
use crate::secret::SecretText;
use crate::shield::Hold;

/// The record on the server.
pub const RECORD_PATH: &str = "/var/lib/rebox/vault-root-tokens.json";

/// How far back from an entry's time a root token counts as the one it stands for (the
/// entry's time and Vault's `creation_time` come from the same server clock; the margin
/// covers the seconds between the entry and the mint).
const SINCE_MARGIN_SECS: i64 = 60;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Entry {
    /// `init` or `generate-root`.
    minted_by: String,
    /// When the entry was made (Unix seconds, the server's clock).
    since: i64,
    /// The token's accessor, once Vault could look it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    accessor: Option<String>,
}

/// A root token in this process's memory, known to the record by its accessor.
pub struct RootToken {
    pub token: SecretText,
    accessor: String,
}

/// Where a token entry stands: made before the mint, completed once the token exists.
pub struct Pending {
    since: i64,
    minted_by: &'static str,
}

impl Site {
    async fn root_record(&self) -> Result<Record> {
        match self.remote.read_root_file(RECORD_PATH).await? {
            None => Ok(Record::default()),
            Some(text) if text.trim().is_empty() => Ok(Record::default()),
            Some(text) => serde_json::from_str(&text)
                .with_context(|| format!("reading the root-token record {RECORD_PATH}")),
        }
    }

    async fn save_root_record(&self, record: &Record) -> Result<()> {
        self.remote
            .write_root_file(RECORD_PATH, &serde_json::to_vec_pretty(record)?)
            .await
            .context("recording a Vault root token's accessor on the server")
    }

    async fn server_clock(&self) -> Result<i64> {
        let out = self.remote.exec("date +%s").await?;
        out.stdout_str()
            .trim()
            .parse()
            .context("reading the server's clock (`date +%s`)")
    }

    /// Records that a root token is about to be minted (`minted_by`: `init`,
    /// `generate-root`), before the call that mints it.
    pub async fn expect_root_token(&self, minted_by: &'static str) -> Result<Pending> {
        let since = self.server_clock().await?;
        let mut record = self.root_record().await?;
        record.entries.push(Entry {
            minted_by: minted_by.into(),
            since,
            accessor: None,
        });
        self.save_root_record(&record).await?;
        Ok(Pending { since, minted_by })
    }

    /// Takes a minted token into the record (its accessor, from an unsealed Vault), then
    /// revokes what earlier runs left. Returns the token and what was revoked, one line each.
    pub async fn adopt_root_token(
        &self,
        pending: Pending,
        token: SecretText,
    ) -> Result<(RootToken, Vec<String>)> {
        let accessor = self.vault().await?.accessor_of(&token).await?;
        let mut record = self.root_record().await?;
        match record
            .entries
            .iter_mut()
            .find(|e| e.since == pending.since && e.minted_by == pending.minted_by)
        {
            Some(e) => e.accessor = Some(accessor.clone()),
            None => record.entries.push(Entry {
                minted_by: pending.minted_by.into(),
                since: pending.since,
                accessor: Some(accessor.clone()),
            }),
        }
        self.save_root_record(&record).await?;
        let token = RootToken { token, accessor };
        let revoked = self.revoke_leftover_root_tokens(&token).await?;
        Ok((token, revoked))
    }

    /// A short-lived root token from the unseal key, recorded before Vault mints it; the
    /// caller revokes it with [`Site::revoke_root_token`]. A generation someone else left
    /// in progress is reported, not cancelled.
    pub async fn root_token_from_key(
        &self,
        shares: &[SecretText],
    ) -> Result<(RootToken, Vec<String>)> {
        let vault = self.vault().await?;
        if vault.generate_root_in_progress().await? {
            anyhow::bail!(crate::next::hinted(
                "a root token generation is already in progress on Vault; rebox did not touch it",
                "if it is yours and abandoned, cancel it (`bao operator generate-root -cancel` or `vault operator generate-root -cancel`), then rerun"
            ));
        }
        let pending = self.expect_root_token("generate-root").await?;
        // From the last share to the recorded accessor, a signal waits: the token must not
        // exist unnamed.
        let hold = Hold::new("a Vault root token exists until its accessor is recorded");
        let token = vault.generate_root(shares).await?;
        hold.failpoint("root-token-minted").await;
        crate::failpoint::exit_after("root-token:minted");
        let adopted = self.adopt_root_token(pending, token).await;
        drop(hold);
        adopted
    }

    /// Revokes `token` and takes it off the record; a failure is reported, since a live
    /// root token must not be forgotten (the record keeps it for the next run).
    pub async fn revoke_root_token(&self, token: RootToken) -> Result<()> {
        self.vault()
            .await?
            .revoke_self(&token.token)
            .await
            .context(crate::next::hinted(
                format!(
                    "revoking the root token rebox used (accessor {}) failed; it may still be valid",
                    token.accessor
                ),
                "rerun the same command (it revokes what the record on the server names), or revoke it yourself: `bao token revoke -accessor ACCESSOR`",
            ))?;
        let mut record = self.root_record().await?;
        record
            .entries
            .retain(|e| e.accessor.as_deref() != Some(token.accessor.as_str()));
        self.save_root_record(&record).await
    }

    /// Revokes the root tokens the record names other than `current` (earlier runs that
    /// stopped before their revocation), and takes them off the record.
    async fn revoke_leftover_root_tokens(&self, current: &RootToken) -> Result<Vec<String>> {
        let mut record = self.root_record().await?;
        let (leftovers, kept): (Vec<Entry>, Vec<Entry>) = record
            .entries
            .drain(..)
            .partition(|e| e.accessor.as_deref() != Some(current.accessor.as_str()));
        if leftovers.is_empty() {
            return Ok(vec![]);
        }
        let vault = self.vault().await?;
        let token = &current.token;
        let mut said = Vec::new();
        for entry in &leftovers {
            let accessors = match &entry.accessor {
                Some(a) => vec![a.clone()],
                // Killed before the lookup: the root tokens made since the entry.
                None => {
                    let mut found = Vec::new();
                    for a in vault.token_accessors(token).await? {
                        if a == current.accessor {
                            continue;
                        }
                        if let Some(info) = vault.lookup_accessor(token, &a).await? {
                            if info.is_root()
                                && info.creation_time >= entry.since - SINCE_MARGIN_SECS
                            {
                                found.push(a);
                            }
                        }
                    }
                    found
                }
            };
            for a in accessors {
                match vault.lookup_accessor(token, &a).await? {
                    Some(_) => {
                        vault.revoke_accessor(token, &a).await?;
                        said.push(format!(
                            "revoked a root token an earlier run left ({} at {}, accessor {a})",
                            entry.minted_by,
                            since_text(entry.since)
                        ));
                    }
                    None => said.push(format!(
                        "the root token an earlier run left ({}, accessor {a}) is already gone",
                        entry.minted_by
                    )),
                }
            }
        }
        record.entries = kept;
        self.save_root_record(&record).await?;
        Ok(said)
    }
}

fn since_text(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}
