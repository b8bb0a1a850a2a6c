//! What a phase does and the doing, in one call (k0sctl's `Manager.Wet(host, msg, fn)`).
//!
//! A phase's `apply` wraps each thing it does to the server in [`Steps::run`] with the line
//! an operator reads. `rebox plan` and `--dry-run` call the same `apply` with [`Steps::plan`]:
//! the lines are collected and no action runs, so the plan cannot describe something the run
//! does not do. In a plan, `apply` must do no I/O outside `run` (what comes before the first
//! step may only read the context); an action's result is `None` there.

use std::future::Future;

use anyhow::Result;

/// The step lines of one phase, and whether the actions run.
#[derive(Debug, Default)]
pub struct Steps {
    planning: bool,
    lines: Vec<String>,
}

impl Steps {
    /// Collects the lines; no action runs.
    pub fn plan() -> Steps {
        Steps {
            planning: true,
            lines: Vec::new(),
        }
    }

    /// Runs every action, keeping the lines of what was done.
    pub fn run_all() -> Steps {
        Steps::default()
    }

    /// True in a plan: the caller may skip work that only prepares an action.
    pub fn planning(&self) -> bool {
        self.planning
    }

    /// One step: `line` says what `action` does. `Some(result)` when it ran, `None` in a plan.
    pub async fn run<T>(
        &mut self,
        line: impl Into<String>,
        action: impl Future<Output = Result<T>>,
    ) -> Result<Option<T>> {
        self.run_lines([line.into()], action).await
    }

    /// One action that an operator reads as several lines (each depends on the one before:
    /// Vault's answer, then where its key goes).
    pub async fn run_lines<T>(
        &mut self,
        lines: impl IntoIterator<Item = String>,
        action: impl Future<Output = Result<T>>,
    ) -> Result<Option<T>> {
        let lines: Vec<String> = lines.into_iter().collect();
        for line in &lines {
            tracing::debug!("step: {line}");
        }
        self.lines.extend(lines);
        if self.planning {
            return Ok(None);
        }
        action.await.map(Some)
    }

    /// The lines, in order.
    pub fn into_lines(self) -> Vec<String> {
        self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_plan_collects_the_lines_and_runs_nothing() {
        let mut ran = false;
        let mut steps = Steps::plan();
        let out = steps
            .run("touch the server", async {
                ran = true;
                Ok(1)
            })
            .await
            .unwrap();
        assert_eq!(out, None);
        assert!(!ran, "a plan ran an action");
        assert_eq!(steps.into_lines(), vec!["touch the server".to_string()]);
    }

    #[tokio::test]
    async fn a_run_runs_each_action_and_keeps_the_same_lines() {
        let mut steps = Steps::run_all();
        let out = steps
            .run_lines(["first".to_string(), "second".to_string()], async { Ok(7) })
            .await
            .unwrap();
        assert_eq!(out, Some(7));
        let err = steps
            .run("fails", async { anyhow::bail!("no") as Result<()> })
            .await;
        assert!(err.is_err());
        assert_eq!(steps.into_lines(), vec!["first", "second", "fails"]);
    }
}
