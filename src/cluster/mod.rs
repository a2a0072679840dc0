//! Kubernetes: the control-plane side of wpdr that talks to the API server:
//! leader election for the daemon (`lease`) and the namespace inventory with
//! the image digests that run (`inventory`). Storing the inventory in a set
//! (Secrets encrypted) and applying it into a new namespace come next.

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
}

impl Classify for ClusterError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Internal
    }
    fn metric_label(&self) -> &'static str {
        match self {
            ClusterError::Api { .. } => "kube_api",
            ClusterError::Client(_) => "kube_client",
        }
    }
}
