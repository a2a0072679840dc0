//! Many sites per cluster: the site as a Kubernetes object (`sites.wpdr.io`),
//! the control plane a fleet controller drives. A plain `wpdr.yaml` keeps
//! working for one site; a Site carries the same configuration, with every
//! credential a reference to a key of a Secret in the site's namespace.

pub mod site;
