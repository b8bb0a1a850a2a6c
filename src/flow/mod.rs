//! The phase runner: every long command (rebuild, restore, rotation) is a list of phases.
//!
//! A phase knows its title, whether it still has work to do (so a rerun skips what is done),
//! how to do it — each step with the line that `plan` and `--dry-run` show ([`Steps`]) — and
//! how to verify it. The
//! runner records each finished phase in a journal on the server and on the laptop, so a
//! dropped connection or a closed laptop resumes where it stopped.

pub mod journal;
mod runner;
mod steps;

use anyhow::Result;
use async_trait::async_trait;

pub use runner::{plan, render_plan, run, Outcome, PhaseReport, PlanEntry, RunOptions, RunReport};
pub use steps::Steps;

/// One step of a flow, generic over the flow's context (connections, config, results).
#[async_trait]
pub trait Phase<C: Send>: Send + Sync {
    /// Stable identifier, recorded in the journal (`k3s-install`).
    fn id(&self) -> &'static str;
    /// What an operator reads (`Install k3s v1.35.1+k3s1`).
    fn title(&self) -> String;
    /// Whether work remains. Read-only; must be cheap and safe to call at any time.
    async fn pending(&self, ctx: &mut C) -> Result<bool>;
    /// Does the work, every action through `steps.run(line, …)`; `plan` calls it with
    /// [`Steps::plan`], which collects the lines and runs nothing, so no I/O outside `run`.
    /// Must be safe to rerun after an interruption at any point.
    async fn apply(&self, ctx: &mut C, steps: &mut Steps) -> Result<()>;
    /// Proves the work took effect (e.g. the node is Ready), with a deadline of its own.
    async fn verify(&self, ctx: &mut C) -> Result<()>;
}
