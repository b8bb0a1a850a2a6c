//! Windows the process must not be stopped in: while a [`Hold`] lives (from just before
//! Vault's `sys/init` until its key is safe in the offline backup), SIGINT, SIGTERM and SIGHUP
//! are deferred — said on screen — and acted on when the last hold ends, at a point a rerun
//! resumes from.
//!
//! The handlers are installed by the first hold (tokio cannot give a signal back to its
//! default action, so from then on a signal outside any hold ends the process at once, with
//! the shell's status 128+N, as the default action would have). A command that never holds
//! (e.g. `status --watch`, which handles Ctrl-C itself) is left alone.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

/// Holds alive now.
static HELD: AtomicUsize = AtomicUsize::new(0);
/// The first signal received during a hold (0: none).
static PENDING: AtomicI32 = AtomicI32::new(0);
/// What the current outermost hold protects, for the message.
static WHAT: Mutex<&'static str> = Mutex::new("");
static INSTALL: Once = Once::new();

/// The test seam: `REBOX_FAILPOINT_SIGNAL_AT=<point>` makes the process send itself SIGINT at
/// that point of a hold (as an operator's Ctrl-C at the worst moment), then go on.
pub const SIGNAL_AT_ENV: &str = "REBOX_FAILPOINT_SIGNAL_AT";

/// A deferred-signal window; dropping the last one acts on a signal received meanwhile.
#[must_use = "signals are deferred only while the Hold lives"]
pub struct Hold(());

impl Hold {
    /// Starts deferring signals; `what` says what is protected ("the new unseal key exists
    /// only in memory until the offline backup is written").
    pub fn new(what: &'static str) -> Hold {
        INSTALL.call_once(install);
        if HELD.fetch_add(1, Ordering::SeqCst) == 0 {
            *WHAT.lock().unwrap_or_else(|e| e.into_inner()) = what;
        }
        Hold(())
    }

    /// The test seam at `point` (see [`SIGNAL_AT_ENV`]): sends SIGINT to this process and
    /// waits until the handler has deferred it, so the test is deterministic.
    pub async fn failpoint(&self, point: &str) {
        if std::env::var(SIGNAL_AT_ENV).ok().as_deref() != Some(point) {
            return;
        }
        eprintln!("failpoint: sending SIGINT to rebox at `{point}` ({SIGNAL_AT_ENV})");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::INT);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while PENDING.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
            // Waiting for our own signal handler task, which has no other event to wait on.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if HELD.fetch_sub(1, Ordering::SeqCst) == 1 {
            let sig = PENDING.swap(0, Ordering::SeqCst);
            if sig != 0 {
                let what = *WHAT.lock().unwrap_or_else(|e| e.into_inner());
                eprintln!(
                    "rebox: stopping now for the {} received earlier: {what} is done; the same command resumes from here",
                    name(sig)
                );
                std::process::exit(128 + sig);
            }
        }
    }
}

fn name(sig: i32) -> &'static str {
    match sig {
        2 => "SIGINT (Ctrl-C)",
        15 => "SIGTERM",
        1 => "SIGHUP (terminal closed)",
        _ => "signal",
    }
}

fn install() {
    for (kind, number) in [
        (SignalKind::interrupt(), 2),
        (SignalKind::terminate(), 15),
        (SignalKind::hangup(), 1),
    ] {
        let mut stream = match signal(kind) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot handle {}: {e}", name(number));
                continue;
            }
        };
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if HELD.load(Ordering::SeqCst) == 0 {
                    std::process::exit(128 + number);
                }
                if PENDING
                    .compare_exchange(0, number, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    let what = *WHAT.lock().unwrap_or_else(|e| e.into_inner());
                    eprintln!(
                        "rebox: {} received; not stopping yet: {what}. rebox stops as soon as that is done",
                        name(number)
                    );
                }
            }
        });
    }
}
