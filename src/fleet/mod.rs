//! Many sites per cluster: the site as a Kubernetes object (`sites.wpdr.io`)
//! and the controller that runs each site's schedules as Kubernetes Jobs.
//! A plain `wpdr.yaml` keeps working for one site; a Site carries the same
//! configuration, with every credential a reference to a key of a Secret in
//! the site's namespace.
//!
//! The control plane is here (`schedule`: when, with `H` spreading;
//! `plan`: what starts now, within the caps; `controller`: the rounds
//! against the API server; `job`: the manifests). The work itself is the
//! jobs layer's, run inside each Job by `wpdr fleet run-job` (`outcome`
//! carries its result back through the Pod's termination message).

pub mod controller;
pub mod job;
pub mod metrics;
pub mod outcome;
pub mod plan;
pub mod schedule;
pub mod site;
