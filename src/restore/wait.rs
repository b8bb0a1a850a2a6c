//! Waiting for a state, never for luck: a wait reads a condition, treats "not yet" as not
//! yet, and fails only at its deadline, saying what it waited for, for how long, what it saw
//! last, and where to look next.
//!
//! The condition is read again on every change of the objects it depends on (kube watches
//! on the given APIs), and every [`RECHECK`] besides, so a watch that breaks or an object
//! kind not served yet (a CRD still being installed) never stalls the wait. While it waits,
//! a spinner (on a terminal) or a line (otherwise) names what it waits for, what it last saw
//! and the time spent.

use std::future::Future;
use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use kube::api::DynamicObject;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::Notify;

/// The backstop between two reads when no watch event comes.
pub const RECHECK: Duration = Duration::from_secs(2);

/// What one read of the condition found.
#[derive(Debug)]
pub enum Look<T> {
    /// The state waited for.
    Ready(T),
    /// Not there yet; what was seen instead.
    NotYet(String),
    /// A state that will not turn into the awaited one.
    Failed(anyhow::Error),
}

/// Watches that wake the wait on every change of their objects; stopped on drop.
struct Triggers {
    notify: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Triggers {
    fn start(apis: &[Api<DynamicObject>]) -> Triggers {
        let notify = Arc::new(Notify::new());
        let tasks = apis
            .iter()
            .cloned()
            .map(|api| {
                let notify = notify.clone();
                tokio::spawn(async move {
                    let mut stream =
                        Box::pin(watcher(api, watcher::Config::default()).default_backoff());
                    while next_item(&mut stream).await.is_some() {
                        notify.notify_one();
                    }
                })
            })
            .collect();
        Triggers { notify, tasks }
    }
}

/// The next item of a stream (the `Stream` trait reached through kube's extension trait).
async fn next_item<S: WatchStreamExt + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

impl Drop for Triggers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The wait's line on stderr: a spinner on a terminal, else one line when it starts waiting
/// and one when it is over.
struct Line {
    what: String,
    shown: bool,
    bar: Option<ProgressBar>,
    announced: bool,
}

impl Line {
    fn new(what: &str, shown: bool) -> Line {
        Line {
            what: what.to_string(),
            shown,
            bar: None,
            announced: false,
        }
    }

    fn not_yet(&mut self, seen: &str) {
        if !self.shown {
            return;
        }
        if std::io::stderr().is_terminal() {
            let bar = self.bar.get_or_insert_with(|| {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("    {spinner} {msg} ({elapsed})")
                        .expect("static template"),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            });
            bar.set_message(format!("waiting for {}: {seen}", self.what));
        } else if !self.announced {
            eprintln!("    waiting for {} ({seen})", self.what);
        }
        self.announced = true;
    }

    fn done(self, text: &str) {
        if !self.announced {
            return;
        }
        match self.bar {
            Some(bar) => bar.finish_with_message(text.to_string()),
            None => eprintln!("    {text}"),
        }
    }
}

/// Reads `look` until it is [`Look::Ready`] (its value is returned) or [`Look::Failed`],
/// re-reading on every change seen by watches on `triggers` and every [`RECHECK`]. At the
/// deadline the error names `what`, the time waited, the last "not yet" and `next`.
pub async fn until<T, F, Fut>(
    what: &str,
    deadline: Duration,
    triggers: &[Api<DynamicObject>],
    next: &str,
    look: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Look<T>>>,
{
    run(what, deadline, triggers, next, look, true).await
}

/// [`until`] without its line on stderr, for a caller that shows its own progress (a
/// volume's restore bar).
pub async fn until_silent<T, F, Fut>(
    what: &str,
    deadline: Duration,
    triggers: &[Api<DynamicObject>],
    next: &str,
    look: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Look<T>>>,
{
    run(what, deadline, triggers, next, look, false).await
}

async fn run<T, F, Fut>(
    what: &str,
    deadline: Duration,
    triggers: &[Api<DynamicObject>],
    next: &str,
    mut look: F,
    shown: bool,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Look<T>>>,
{
    let started = Instant::now();
    let watches = Triggers::start(triggers);
    let mut line = Line::new(what, shown);
    loop {
        // An API error is one more "not yet" (the server restarting, a CRD not served
        // yet); it is what the deadline reports if it persists.
        let last = match look().await {
            Ok(Look::Ready(v)) => {
                line.done(&format!(
                    "{what}: ready after {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
                return Ok(v);
            }
            Ok(Look::Failed(e)) => {
                line.done(&format!("{what}: failed"));
                return Err(e);
            }
            Ok(Look::NotYet(seen)) => seen,
            Err(e) => format!("the API answered: {}", crate::next::describe(&e)),
        };
        line.not_yet(&last);
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            line.done(&format!("{what}: gave up after {}s", deadline.as_secs()));
            return Err(anyhow!(crate::next::hinted(
                format!(
                    "waited {}s for {what}; last seen: {last}",
                    deadline.as_secs()
                ),
                next
            )));
        }
        let _ = tokio::time::timeout(left.min(RECHECK), watches.notify.notified()).await;
    }
}

/// The deadline of a volume of `bytes`: `base` plus `per_gib` for every started GiB.
pub fn budget(base: Duration, per_gib: Duration, bytes: u64) -> Duration {
    base + per_gib * bytes.div_ceil(1 << 30) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn not_yet_is_not_a_failure_until_the_deadline() {
        let mut n = 0;
        let got = until(
            "the third look",
            Duration::from_secs(30),
            &[],
            "n/a",
            || {
                n += 1;
                let n = n;
                async move {
                    Ok(if n < 3 {
                        Look::NotYet(format!("look {n}"))
                    } else {
                        Look::Ready(n)
                    })
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn the_deadline_says_what_was_seen_last() {
        let err = until(
            "BackupTarget default",
            Duration::from_millis(300),
            &[],
            "look at the manager's pod",
            || async { Ok(Look::<()>::NotYet("it does not exist yet".into())) },
        )
        .await
        .unwrap_err();
        let text = crate::next::describe(&err);
        assert!(
            text.contains("waited 0s for BackupTarget default"),
            "{text}"
        );
        assert!(text.contains("last seen: it does not exist yet"), "{text}");
        assert!(text.contains("look at the manager's pod"), "{text}");
    }

    #[tokio::test]
    async fn a_failed_state_ends_the_wait_at_once() {
        let started = Instant::now();
        let err = until("x", Duration::from_secs(60), &[], "n/a", || async {
            Ok(Look::<()>::Failed(anyhow!("RestoreFailure")))
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("RestoreFailure"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn budgets_grow_with_size() {
        let (b, g) = (Duration::from_secs(600), Duration::from_secs(120));
        assert_eq!(budget(b, g, 0), b);
        assert_eq!(budget(b, g, 1 << 30), Duration::from_secs(720));
        assert_eq!(budget(b, g, (1 << 30) + 1), Duration::from_secs(840));
    }
}
