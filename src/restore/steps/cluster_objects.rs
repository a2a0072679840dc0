//! cluster-objects: the set's namespace objects applied into the target
//! namespace, images pinned to the digests that ran.

use crate::exit::ExitCode;
use crate::restore::step::{StepEnv, StepError};
use crate::restore::{restore_cluster, ClusterRestoreOptions};
use serde_json::json;

pub(super) async fn run(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    let client =
        env.ctx.kube.as_ref().ok_or_else(|| {
            StepError::new("no Kubernetes client (set KUBECONFIG)", ExitCode::Config)
        })?;
    let opts = ClusterRestoreOptions {
        namespace: &env.targets.namespace,
        host_map: &[],
        key: env.ctx.cfg.cluster.secrets_key.as_ref(),
        skip_secrets: false,
        dry_run: false,
        // Our own earlier attempt may have applied some objects already.
        force: env.resumed,
        create_namespace: env.ctx.create_namespace,
    };
    let r = restore_cluster(env.catalog, env.manifest, client, &opts)
        .await
        .map_err(StepError::from)?;
    for o in &r.objects {
        env.log.line(format!("applied {o}"));
    }
    for p in &r.pins {
        env.log.line(format!(
            "pinned {} {}: {} -> {}",
            p.workload, p.container, p.from, p.to
        ));
    }
    for w in &r.warnings {
        env.log.line(format!("warning: {w}"));
    }
    Ok(json!({
        "objects": r.objects.len(),
        "pins": r.pins.len(),
        "secrets": r.secrets_restored,
        "warnings": r.warnings,
    }))
}
