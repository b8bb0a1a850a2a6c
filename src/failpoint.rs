//! Fault injection for the crash tests, one mechanism for the rebuild's phases and the
//! rotation's steps: when `REBOX_FAILPOINT_EXIT_AFTER` names a boundary, the process exits
//! with status 86 on reaching it, as if killed there; a rerun must then resume. Inert unless
//! the variable is set.

/// The environment variable naming the boundary to stop at (a phase id, a rotation step
/// boundary).
pub const ENV_VAR: &str = "REBOX_FAILPOINT_EXIT_AFTER";
/// The exit status of a process stopped by the failpoint.
pub const EXIT_STATUS: i32 = 86;

/// Whether the failpoint setting (the value of [`ENV_VAR`]) names this boundary.
fn failpoint_matches(setting: Option<&str>, boundary: &str) -> bool {
    setting.is_some_and(|s| !s.is_empty() && s == boundary)
}

/// Exits with [`EXIT_STATUS`] when [`ENV_VAR`] names `boundary`; otherwise does nothing.
pub fn exit_after(boundary: &str) {
    let setting = std::env::var(ENV_VAR).ok();
    if failpoint_matches(setting.as_deref(), boundary) {
        eprintln!("failpoint: exiting after `{boundary}` ({ENV_VAR})");
        std::process::exit(EXIT_STATUS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failpoint_fires_only_for_the_named_phase() {
        assert!(failpoint_matches(Some("vault-init"), "vault-init"));
        assert!(!failpoint_matches(Some("vault-init"), "guard"));
        assert!(!failpoint_matches(Some(""), ""));
        assert!(!failpoint_matches(None, "vault-init"));
        // Not set in the test environment: the seam is a no-op.
        if std::env::var_os(ENV_VAR).is_none() {
            exit_after("a");
        }
    }
}
