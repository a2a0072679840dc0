//! wpdr: backup and disaster recovery for WordPress on Kubernetes.
//!
//! The crate is split by the part of the system each module owns. Data-plane
//! modules (`store`, `mysql`) move bytes and rows; control-plane modules
//! (`catalog`, `backup`, `restore`) decide what to do and in what order.

pub mod backup;
pub mod binlog;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod media;
pub mod mysql;
pub mod restore;
pub mod secret;
pub mod store;
pub mod wordpress;
