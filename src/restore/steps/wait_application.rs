//! wait-application: the workloads ready and the site answering without a
//! database error.

use crate::exit::ExitCode;
use crate::restore::step::{StepEnv, StepError};
use crate::wordpress::answers;
use serde_json::json;
use std::time::Duration;

/// WordPress answers with this (and status 500) while its database is not there.
const DB_ERROR_PAGE: &str = "Error establishing a database connection";

pub(super) async fn run(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    let mut waited = Vec::new();
    if let (Some(client), true) = (env.ctx.kube.as_ref(), env.has_cluster_step) {
        let ready = crate::cluster::apply::wait_ready(client, &env.targets.namespace, |line| {
            env.log.line(line)
        })
        .await
        .map_err(StepError::from)?;
        waited.push(format!(
            "{ready} workload(s) ready in {}",
            env.targets.namespace
        ));
    }
    if let Some(url) = &env.targets.site_url {
        let client =
            answers::client().map_err(|e| StepError::new(e.to_string(), ExitCode::Internal))?;
        let mut last = String::new();
        loop {
            let now = match client.get(format!("{url}/")).send().await {
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    if status.as_u16() < 500 && !body.contains(DB_ERROR_PAGE) {
                        env.log.line(format!("{url}/ answers {status}"));
                        break;
                    }
                    format!(
                        "{url}/ answers {status}{}",
                        if body.contains(DB_ERROR_PAGE) {
                            " (no database connection)"
                        } else {
                            ""
                        }
                    )
                }
                Err(e) => format!("{url}/: {e}"),
            };
            if now != last {
                env.log.line(format!("not ready: {now}"));
                last = now;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        waited.push(format!("{url} answers"));
    }
    if waited.is_empty() {
        env.log
            .line("no cluster and no site URL: nothing to wait for");
    }
    Ok(json!({ "waited": waited }))
}
