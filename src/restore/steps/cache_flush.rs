//! cache-flush: empties every configured Redis/Memcached of the restored
//! site after its data is in, so nothing stale is served.

use crate::exit::ExitCode;
use crate::restore::step::{StepEnv, StepError};
use serde_json::json;
use std::time::Duration;

pub(super) async fn run(
    env: &StepEnv<'_>,
    timeout_seconds: u64,
) -> Result<serde_json::Value, StepError> {
    let mut flushed = Vec::new();
    for c in &env.targets.caches {
        c.flush(
            env.ctx.cache_password.as_ref(),
            Duration::from_secs(timeout_seconds),
        )
        .await
        .map_err(|e| StepError::new(e.to_string(), ExitCode::Internal))?;
        env.log.line(format!("flushed {c}: it starts cold"));
        flushed.push(c.to_string());
    }
    if flushed.is_empty() {
        env.log
            .line("no restore.caches configured: nothing to flush");
    }
    Ok(json!({ "flushed": flushed }))
}
