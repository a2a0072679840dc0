//! wait-database: the target server accepting connections.

use crate::exit::{Classify, ExitCode};
use crate::restore::step::{StepEnv, StepError};
use mysql_async::prelude::Queryable;
use serde_json::json;
use std::time::{Duration, Instant};

pub(super) async fn run(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    let (endpoint, _) = env.database()?;
    let t0 = Instant::now();
    let mut last = String::new();
    loop {
        match endpoint.connect(None).await {
            Ok(mut c) => {
                let version: Option<String> =
                    c.query_first("SELECT VERSION()").await.ok().flatten();
                let _ = c.disconnect().await;
                env.log.line(format!(
                    "{} accepts connections ({})",
                    endpoint.display(),
                    version.as_deref().unwrap_or("?")
                ));
                return Ok(
                    json!({"server": endpoint.display(), "version": version, "waited_seconds": t0.elapsed().as_secs_f64()}),
                );
            }
            Err(e) => {
                // Credentials refused will not get better by waiting.
                if e.exit_code() == ExitCode::DatabaseAuth {
                    return Err(StepError::from(e));
                }
                let now = e.to_string();
                if now != last {
                    env.log.line(format!("not ready: {now}"));
                    last = now;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
