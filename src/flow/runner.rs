//! Running and planning a list of phases: skip what is done, apply and verify the rest, record
//! each outcome in every journal store, and stop at the first failure with a resumable error.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::journal::{self, Entry, Journal, State, Store};
use super::{Phase, Steps};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The flow's name in the journal (`rebuild`).
    pub flow: String,
    /// The command that resumes this flow, for error messages (`rebox rebuild`).
    pub resume_hint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ran,
    AlreadyDone,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub id: &'static str,
    pub title: String,
    pub outcome: Outcome,
    pub duration_ms: u64,
    /// The step lines of what was done (none when already done): the plan's lines.
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct RunReport {
    pub phases: Vec<PhaseReport>,
    /// Phases the journal showed finished before this run started.
    pub resumed_after: usize,
}

/// One line of `plan`: the phase, whether work remains, and what it would do.
#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    pub id: &'static str,
    pub title: String,
    pub pending: bool,
    pub steps: Vec<String>,
}

impl RunReport {
    /// One line per phase with its duration (or "already done"), under `heading`.
    pub fn render(&self, heading: &str) -> String {
        let total: u64 = self.phases.iter().map(|p| p.duration_ms).sum();
        let mut out = format!("{heading} in {:.1}s:\n", total as f64 / 1000.0);
        for p in &self.phases {
            let how = match p.outcome {
                Outcome::Ran => format!("{:.1}s", p.duration_ms as f64 / 1000.0),
                Outcome::AlreadyDone => "already done".into(),
            };
            out.push_str(&format!("  {:<70} {how}\n", p.title));
        }
        out
    }
}

/// The plan for a human: each phase numbered, `todo` ones with their steps.
pub fn render_plan(server: &str, entries: &[PlanEntry]) -> String {
    let mut out = format!("Rebuild plan for {server} ({} phases):\n", entries.len());
    for (i, e) in entries.iter().enumerate() {
        let mark = if e.pending { "todo" } else { "done" };
        out.push_str(&format!("{:>2}. [{mark}] {}\n", i + 1, e.title));
        if e.pending {
            for step in &e.steps {
                out.push_str(&format!("         - {step}\n"));
            }
        }
    }
    out
}

/// What every phase would do on this server: its `apply` with a plan's [`Steps`], which
/// runs no action; changes nothing.
pub async fn plan<C: Send>(phases: &[Box<dyn Phase<C>>], ctx: &mut C) -> Result<Vec<PlanEntry>> {
    let mut out = Vec::with_capacity(phases.len());
    for phase in phases {
        let pending = phase.pending(ctx).await?;
        let mut steps = Steps::plan();
        phase.apply(ctx, &mut steps).await?;
        out.push(PlanEntry {
            id: phase.id(),
            title: phase.title(),
            pending,
            steps: steps.into_lines(),
        });
    }
    Ok(out)
}

/// Runs the phases in order. A phase with no work left is skipped; the others are applied
/// and verified. The journal is saved to every store after each phase.
pub async fn run<C: Send>(
    phases: &[Box<dyn Phase<C>>],
    ctx: &mut C,
    stores: &[&dyn Store],
    opts: &RunOptions,
) -> Result<RunReport> {
    let mut journal = load_journal(stores, &opts.flow).await;
    let mut report = RunReport {
        resumed_after: journal.done_count(),
        ..Default::default()
    };
    if report.resumed_after > 0 {
        eprintln!(
            "resuming {}: {} phase(s) finished in an earlier run",
            opts.flow, report.resumed_after
        );
    }
    for phase in phases {
        let title = phase.title();
        let line = PhaseLine::start(&title);
        let started = Instant::now();
        let mut steps = Steps::run_all();
        let result = async {
            if !phase.pending(ctx).await? {
                return Ok(Outcome::AlreadyDone);
            }
            phase.apply(ctx, &mut steps).await?;
            phase.verify(ctx).await?;
            Ok::<_, anyhow::Error>(Outcome::Ran)
        }
        .await;
        let elapsed = started.elapsed();
        let (state, error) = match &result {
            Ok(Outcome::Ran) => (State::Done, None),
            Ok(Outcome::AlreadyDone) => (State::AlreadyDone, None),
            Err(e) => (State::Failed, Some(crate::next::describe(e))),
        };
        journal.record(Entry {
            id: phase.id().to_string(),
            title: title.clone(),
            state,
            finished_at: journal::now(),
            duration_ms: elapsed.as_millis() as u64,
            error,
        });
        save_journal(stores, &journal).await;
        // The crash tests stop here: the phase's outcome is in the journals, as if killed at
        // the phase boundary.
        crate::failpoint::exit_after(phase.id());
        match result {
            Ok(outcome) => {
                line.finish(outcome, elapsed);
                report.phases.push(PhaseReport {
                    id: phase.id(),
                    title,
                    outcome,
                    duration_ms: elapsed.as_millis() as u64,
                    steps: steps.into_lines(),
                });
            }
            Err(e) => {
                line.fail(elapsed);
                // One next step: the cause's own, then the resume.
                let next = match crate::next::of(&e) {
                    Some(fix) => format!(
                        "{fix}; then run `{}` again: it resumes here",
                        opts.resume_hint
                    ),
                    None => format!(
                        "fix the cause above and run `{}` again: it resumes here",
                        opts.resume_hint
                    ),
                };
                return Err(e.context(crate::next::hinted(
                    format!("phase `{title}` failed; everything before it is done and recorded"),
                    next,
                )));
            }
        }
    }
    Ok(report)
}

/// The most advanced journal of this flow among the stores; unreadable ones are reported and
/// ignored (the phases' own checks are the final word on what is done).
async fn load_journal(stores: &[&dyn Store], flow: &str) -> Journal {
    let mut best: Option<Journal> = None;
    for store in stores {
        match store.load().await {
            Ok(Some(j)) if j.flow == flow => {
                if best
                    .as_ref()
                    .is_none_or(|b| j.done_count() > b.done_count())
                {
                    best = Some(j);
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!(
                "warning: ignoring the journal at {}: {e:#}",
                store.describe()
            ),
        }
    }
    best.unwrap_or_else(|| Journal::new(flow))
}

async fn save_journal(stores: &[&dyn Store], journal: &Journal) {
    for store in stores {
        if let Err(e) = store.save(journal).await {
            eprintln!(
                "warning: could not save the journal to {}: {e:#}",
                store.describe()
            );
        }
    }
}

/// One line per phase on stderr: a spinner with elapsed time on a terminal, plain lines otherwise.
struct PhaseLine {
    bar: Option<ProgressBar>,
    title: String,
}

impl PhaseLine {
    fn start(title: &str) -> PhaseLine {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .expect("static template"),
            );
            bar.set_message(title.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            eprintln!("==> {title}");
        }
        PhaseLine {
            bar,
            title: title.to_string(),
        }
    }

    fn finish(self, outcome: Outcome, elapsed: Duration) {
        let text = match outcome {
            Outcome::Ran => format!("done  {} ({:.1}s)", self.title, elapsed.as_secs_f64()),
            Outcome::AlreadyDone => format!("done  {} (already done)", self.title),
        };
        self.end(&text);
    }

    fn fail(self, elapsed: Duration) {
        let text = format!("FAIL  {} after {:.1}s", self.title, elapsed.as_secs_f64());
        self.end(&text);
    }

    fn end(self, text: &str) {
        match self.bar {
            Some(bar) => bar.finish_with_message(text.to_string()),
            None => eprintln!("    {text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::journal::LocalStore;
    use async_trait::async_trait;

    /// A fake "server": which phases have taken effect, and a phase that fails once.
    #[derive(Default)]
    struct World {
        applied: Vec<&'static str>,
        fail_once: Option<&'static str>,
    }

    struct Step(&'static str);

    #[async_trait]
    impl Phase<World> for Step {
        fn id(&self) -> &'static str {
            self.0
        }
        fn title(&self) -> String {
            format!("step {}", self.0)
        }
        async fn pending(&self, w: &mut World) -> Result<bool> {
            Ok(!w.applied.contains(&self.0))
        }
        async fn apply(&self, w: &mut World, steps: &mut Steps) -> Result<()> {
            steps
                .run(format!("do {}", self.0), async {
                    if w.fail_once == Some(self.0) {
                        w.fail_once = None;
                        anyhow::bail!("{} broke", self.0);
                    }
                    w.applied.push(self.0);
                    Ok(())
                })
                .await?;
            Ok(())
        }
        async fn verify(&self, w: &mut World) -> Result<()> {
            anyhow::ensure!(
                w.applied.contains(&self.0),
                "{} did not take effect",
                self.0
            );
            Ok(())
        }
    }

    fn phases() -> Vec<Box<dyn Phase<World>>> {
        vec![
            Box::new(Step("a")),
            Box::new(Step("b")),
            Box::new(Step("c")),
        ]
    }

    fn opts() -> RunOptions {
        RunOptions {
            flow: "test".into(),
            resume_hint: "rebox test".into(),
        }
    }

    #[tokio::test]
    async fn a_failed_run_resumes_after_the_last_finished_phase() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore {
            path: dir.path().join("journal.json"),
        };
        let mut world = World {
            fail_once: Some("b"),
            ..Default::default()
        };

        let err = run(&phases(), &mut world, &[&store], &opts())
            .await
            .unwrap_err();
        // The resume command is the error's next step, printed once, last.
        let text = crate::ui::error_report(&err);
        assert!(
            text.contains("step b") && text.contains("b broke"),
            "{text}"
        );
        assert!(
            text.ends_with("run `rebox test` again: it resumes here"),
            "{text}"
        );
        assert_eq!(text.matches("next:").count(), 1, "{text}");
        assert_eq!(world.applied, vec!["a"]);
        let j = store.load().await.unwrap().unwrap();
        assert!(j.is_done("a") && !j.is_done("b"));

        let report = run(&phases(), &mut world, &[&store], &opts())
            .await
            .unwrap();
        assert_eq!(report.resumed_after, 1);
        let outcomes: Vec<Outcome> = report.phases.iter().map(|p| p.outcome).collect();
        assert_eq!(
            outcomes,
            vec![Outcome::AlreadyDone, Outcome::Ran, Outcome::Ran]
        );
        assert_eq!(world.applied, vec!["a", "b", "c"], "a phase ran twice");
        // What ran is what the plan says: the same lines, from the same call.
        let done: Vec<&[String]> = report.phases.iter().map(|p| p.steps.as_slice()).collect();
        assert_eq!(
            done,
            vec![
                &[][..],
                &["do b".to_string()][..],
                &["do c".to_string()][..]
            ]
        );
    }

    #[tokio::test]
    async fn plan_changes_nothing_and_reports_pending_work() {
        let mut world = World {
            applied: vec!["a"],
            ..Default::default()
        };
        let entries = plan(&phases(), &mut world).await.unwrap();
        let pending: Vec<bool> = entries.iter().map(|e| e.pending).collect();
        assert_eq!(pending, vec![false, true, true]);
        assert_eq!(entries[1].steps, vec!["do b".to_string()]);
        assert_eq!(world.applied, vec!["a"]);
    }
}
