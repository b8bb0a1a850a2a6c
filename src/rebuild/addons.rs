//! Addon phases: apply one group of the embedded manifests with server-side apply, then wait
//! for what it installs (each HelmChart's `helm-install-<name>` Job to complete).

use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::wait::{await_condition, conditions};
use kube::Api;
use serde_json::Value;

use super::Ctx;
use crate::cluster::apply::describe;
use crate::flow::{Phase, Steps};
use crate::manifests::Group;

/// Applies every manifest of `group` and waits for its charts.
pub struct Apply {
    pub group: Group,
    pub title: &'static str,
}

impl Apply {
    fn objects(&self, ctx: &Ctx) -> Result<Vec<Value>> {
        let mut objects = Vec::new();
        for m in ctx.manifests()?.iter().filter(|m| m.group == self.group) {
            if !m.missing_config.is_empty() {
                anyhow::bail!(crate::next::hinted(
                    format!(
                        "{} needs {} in rebox.toml before it can be applied",
                        m.name,
                        m.missing_config.join(", ")
                    ),
                    "set it (`rebox init` writes a commented file) and rerun"
                ));
            }
            if !m.secret_inputs.is_empty()
                && m.secret_inputs
                    .iter()
                    .all(|i| ctx.secret_values.contains_key(&i.source))
            {
                let lookup = |i: &crate::manifests::SecretInput| {
                    ctx.secret_values
                        .get(&i.source)
                        .map(|v| zeroize::Zeroizing::new(v.expose().to_string()))
                };
                objects.extend(m.objects_with_secrets(&lookup)?);
                continue;
            }
            if !m.secret_inputs.is_empty() {
                let sources: Vec<String> = m
                    .secret_inputs
                    .iter()
                    .map(|i| {
                        format!(
                            "{} (for Secret {}/{} key {})",
                            i.source, i.namespace, i.secret, i.key
                        )
                    })
                    .collect();
                anyhow::bail!(crate::next::hinted(format!("{} needs secret values ({})", m.name, sources.join(", ")), "on a restore they come from the offline backup's extra secrets (or prompts); for a fresh rebuild of a public repository set argocd.repo_auth = \"none\" in rebox.toml"));
            }
            objects.extend(m.objects.iter().cloned());
        }
        Ok(objects)
    }
}

/// HelmCharts among the objects: (namespace, name).
fn helm_charts(objects: &[Value]) -> Vec<(String, String)> {
    objects
        .iter()
        .filter(|o| o["kind"] == "HelmChart")
        .map(|o| {
            let ns = o["metadata"]["namespace"]
                .as_str()
                .unwrap_or("kube-system")
                .to_string();
            (
                ns,
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[async_trait]
impl Phase<Ctx> for Apply {
    fn id(&self) -> &'static str {
        self.group.name()
    }
    fn title(&self) -> String {
        self.title.to_string()
    }
    async fn pending(&self, ctx: &mut Ctx) -> Result<bool> {
        let objects = self.objects(ctx)?;
        let Ok(cluster) = ctx.site.cluster().await else {
            return Ok(true);
        };
        if !cluster.all_exist(&objects).await? {
            return Ok(true);
        }
        for (ns, name) in helm_charts(&objects) {
            let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
            let done = jobs
                .get_opt(&format!("helm-install-{name}"))
                .await?
                .is_some_and(|j| job_complete(&j));
            if !done {
                return Ok(true);
            }
        }
        Ok(false)
    }
    async fn apply(&self, ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
        let objects = match self.objects(ctx) {
            Ok(objects) => objects,
            // A plan shows why; a run fails with it.
            Err(e) => {
                let line = format!("cannot render: {e:#}");
                steps.run(line, async { Err::<(), _>(e) }).await?;
                return Ok(());
            }
        };
        let lines = objects.iter().map(|o| format!("apply {}", describe(o)));
        steps
            .run_lines(lines, async {
                ctx.site.cluster().await?.apply_all(&objects).await
            })
            .await?;
        let deadline = Duration::from_secs(ctx.site.config.k3s.chart_timeout_secs);
        for (ns, name) in helm_charts(&objects) {
            let line = format!("wait for Job {ns}/helm-install-{name} to complete");
            steps
                .run(line, chart_installed(ctx, &ns, &name, deadline))
                .await?;
        }
        Ok(())
    }
    async fn verify(&self, ctx: &mut Ctx) -> Result<()> {
        anyhow::ensure!(
            !self.pending(ctx).await?,
            "an object of {} is missing, or a chart's install Job is not complete, after the apply",
            self.group.name()
        );
        Ok(())
    }
}

/// Waits for klipper-helm's install Job of chart `name` to complete, up to `deadline`.
async fn chart_installed(ctx: &mut Ctx, ns: &str, name: &str, deadline: Duration) -> Result<()> {
    let cluster = ctx.site.cluster().await?;
    let job = format!("helm-install-{name}");
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), ns);
    match tokio::time::timeout(
        deadline,
        await_condition(jobs, &job, conditions::is_job_completed()),
    )
    .await
    {
        Ok(result) => {
            result.with_context(|| format!("watching Job {ns}/{job}"))?;
            Ok(())
        }
        Err(_) => anyhow::bail!(crate::next::hinted(
            format!(
                "chart {name} did not install within {}s (Job {ns}/{job} not complete)",
                deadline.as_secs()
            ),
            format!("`kubectl -n {ns} logs job/{job}` on the server shows why; on a slow uplink raise [k3s] chart_timeout_secs")
        )),
    }
}

fn job_complete(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}
