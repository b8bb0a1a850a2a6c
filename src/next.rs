//! The operator's next step, carried beside an error and printed once, last (as cargo and uv
//! print their one hint).
//!
//! A layer that knows what to do attaches a [`Hinted`] (`bail!(hinted(what, next))`,
//! `.context(hinted(…))`); its `Display` is only the message, so `{:#}` chains and journals
//! stay one line per cause. [`of`] finds the hint that [`crate::ui::report_error`] prints: the
//! outermost one, since the caller names the homelab's objects; else a low-level error's own
//! (a [`VaultError`]'s or a [`RemoteError`]'s); else one written into a text after `next:`
//! (what [`describe`] stores in journals and reports).

use std::fmt;

use crate::remote::RemoteError;
use crate::vault::VaultError;

/// The text that introduces a next step inside older messages.
const INLINE: &str = "\n  next: ";

/// An error message with the operator's next step beside it.
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub next: String,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// `message`, with `next` as the step to take.
pub fn hinted(message: impl fmt::Display, next: impl fmt::Display) -> Hinted {
    Hinted {
        message: message.to_string(),
        next: next.to_string(),
    }
}

/// A message without the `next:` step written into it, and that step.
pub fn split(text: &str) -> (&str, Option<&str>) {
    match text.split_once(INLINE) {
        Some((message, next)) => (message, Some(next.trim())),
        None => (text, None),
    }
}

/// The one next step for `err` (see the module's docs), if any layer gave one.
pub fn of(err: &anyhow::Error) -> Option<String> {
    if let Some(h) = err.downcast_ref::<Hinted>() {
        return Some(h.next.clone());
    }
    for cause in err.chain() {
        if let Some(next) = split(&cause.to_string()).1 {
            return Some(next.to_string());
        }
        if let Some(v) = cause.downcast_ref::<VaultError>() {
            return Some(v.next());
        }
        if let Some(r) = cause.downcast_ref::<RemoteError>() {
            return Some(r.next());
        }
    }
    None
}

/// The error as one text for a report or a journal: the cause chain (`{:#}`) and, when a layer
/// gave one, its next step after `next:` (as the messages of earlier versions read).
pub fn describe(err: &anyhow::Error) -> String {
    let chain = format!("{err:#}");
    match of(err) {
        Some(next) if split(&chain).1.is_none() => format!("{chain}{INLINE}{next}"),
        _ => chain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn next_the_outermost_hint_wins_and_messages_stay_clean() {
        let low: anyhow::Result<()> = Err(anyhow::Error::new(hinted("disk full", "free space")));
        let err = low
            .context(hinted("writing the backup", "use another stick"))
            .unwrap_err();
        assert_eq!(of(&err).as_deref(), Some("use another stick"));
        assert_eq!(format!("{err:#}"), "writing the backup: disk full");
    }

    #[test]
    fn next_an_ssh_error_gives_its_hint_once_last_and_not_in_its_message() {
        let err = anyhow::Error::new(RemoteError::SudoNeedsPassword { user: "ops".into() })
            .context("checking sudo");
        assert!(of(&err).expect("a hint").contains("NOPASSWD"));
        assert!(!format!("{err:#}").contains("next:"), "{err:#}");
        let printed = crate::ui::error_report(&err);
        assert_eq!(printed.matches("next:").count(), 1, "{printed}");
        assert!(
            printed.trim_end().ends_with("/etc/sudoers.d/ops`"),
            "{printed}"
        );
    }

    #[test]
    fn next_a_vault_error_gives_its_own_hint_when_no_caller_did() {
        let err = anyhow::Error::new(VaultError::NotEnoughShares {
            given: 1,
            threshold: 2,
        })
        .context("unsealing Vault");
        let next = of(&err).expect("a hint");
        assert!(next.contains("at least 2"), "{next}");
        assert!(!format!("{err:#}").contains("next:"), "{err:#}");
    }

    #[test]
    fn next_describe_keeps_the_step_in_the_text() {
        let err = anyhow::Error::new(hinted("no key", "pass --from FILE")).context("recreating");
        assert_eq!(
            describe(&err),
            "recreating: no key\n  next: pass --from FILE"
        );
    }

    #[test]
    fn next_an_inline_hint_is_split_off() {
        let err = anyhow::anyhow!("k3s is down\n  next: start it").context("connecting");
        assert_eq!(of(&err).as_deref(), Some("start it"));
        assert_eq!(split("a\n  next: b"), ("a", Some("b")));
    }
}
