//! wpdr: backup and disaster recovery for WordPress on Kubernetes.
//!
//! The crate is split by the part of the system each module owns. `config`,
//! `exit` and `secret` are the ground floor, `trust` (keys, sealing,
//! signatures) just above it; the parts (`store`, `catalog`,
//! `mysql`, `binlog`, `media`, `cluster`, `wordpress`, `restore`) move bytes,
//! rows and objects; `jobs` is the control plane — each job once, in its
//! order — called by the CLI (`cli` + the binary's `commands`) and the
//! `daemon`. `tests/architecture.rs` keeps the layers free of cycles.

pub mod binlog;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod fleet;
pub mod jobs;
pub mod media;
pub mod mysql;
pub mod restore;
pub mod secret;
pub mod store;
pub mod trust;
pub mod wordpress;
