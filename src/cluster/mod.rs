//! Kubernetes: the control-plane side of wpdr that talks to the API server:
//! leader election for the daemon (`lease`) and the namespace inventory with
//! the image digests that run (`inventory`). Storing the inventory in a set
//! (Secrets encrypted) and applying it into a new namespace come next.

pub mod apply;
pub mod inventory;
pub mod lease;
pub mod seal;

use crate::exit::{Classify, ExitCode};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Kubernetes API: {doing}: {source}")]
    Api {
        doing: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot build a Kubernetes client: {0}. In a pod, mount a service account; elsewhere set KUBECONFIG.")]
    Client(String),
    #[error("namespace {namespace} already runs {workloads} workload(s). Restore into a fresh namespace, or pass --force to apply over them.")]
    NamespaceOccupied { namespace: String, workloads: usize },
    #[error("object {object} cannot be restored: {detail}")]
    Invalid { object: String, detail: String },
}

impl Classify for ClusterError {
    fn exit_code(&self) -> ExitCode {
        match self {
            ClusterError::NamespaceOccupied { .. } => ExitCode::TargetNotEmpty,
            ClusterError::Invalid { .. } => ExitCode::Integrity,
            _ => ExitCode::Internal,
        }
    }
    fn metric_label(&self) -> &'static str {
        match self {
            ClusterError::Api { .. } => "kube_api",
            ClusterError::Client(_) => "kube_client",
            ClusterError::NamespaceOccupied { .. } => "namespace_occupied",
            ClusterError::Invalid { .. } => "invalid_object",
        }
    }
}
