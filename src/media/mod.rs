//! Media library: the offsite mirror of the uploads bucket.
//!
//! This first part is the planner (`plan`): the pure decision of what a
//! mirror run copies, retains and deletes, with its safety rails. The
//! executor (listing, copying with metadata, the retained prefix, the per-set
//! media index and restore) builds on it in the media issue.

pub mod plan;
