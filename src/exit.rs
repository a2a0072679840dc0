//! Exit codes: one per kind of failure, so scripts and CronJobs can tell
//! "the database is down" from "the backup is corrupt" without parsing text.

/// Process exit codes. Stable: documented in the README; never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Ok = 0,
    /// An unexpected failure (a bug, or a fault with no better category).
    Internal = 1,
    /// Command-line usage error (clap's own code).
    Usage = 2,
    /// The configuration file or environment is invalid.
    Config = 3,
    /// The database server cannot be reached.
    DatabaseUnreachable = 4,
    /// The database refused our credentials or privileges.
    DatabaseAuth = 5,
    /// The backup store cannot be reached, or its bucket/directory is missing.
    StoreUnavailable = 6,
    /// The named backup set does not exist (or is incomplete).
    SetNotFound = 7,
    /// An artifact is missing, truncated or altered.
    Integrity = 8,
    /// Another backup of this site holds the lock.
    Locked = 9,
    /// The restore target already holds data and `--force` was not given.
    TargetNotEmpty = 10,
    /// A restore finished but does not match the set's row counts/checksums.
    RestoreMismatch = 11,
    /// A database statement failed during backup or restore.
    Database = 12,
    /// The store refused our credentials.
    StoreAuth = 13,
    /// The media mirror finished but some objects could not be copied (or
    /// deletions were refused by the safety rails); a rerun retries.
    MediaIncomplete = 14,
    /// A restore step did not finish (or its component did not become
    /// ready) within the plan's timeout.
    Timeout = 15,
    /// No replica is replicating within the lag bound (and falling back to
    /// the primary is not allowed).
    ReplicaUnusable = 16,
    /// The binary log archive cannot continue its chain: the primary no
    /// longer has the log at the archived position (purged, or a failover
    /// to a server that never had it). The gap is recorded and reported.
    BinlogGap = 17,
    /// The requested point in time or GTID is outside the recoverable window
    /// (no set before it, or the archive does not reach it without a gap).
    NotRecoverable = 18,
    /// The database holds an object wpdr cannot back up (named in the
    /// message) and `database.skip` does not name it; nothing was stored.
    Unsupported = 19,
    /// The schema changed (DDL) while a backup opened its snapshot or read a
    /// table, and did not settle over the retries; nothing was stored.
    SchemaChanged = 20,
    /// A backup committed its set without every part: the database is in it,
    /// media or the cluster's objects failed (each named, in the set too);
    /// or a restore's plan needs a part its set lacks.
    Partial = 21,
    /// What was asked for is encrypted and no identity given can open it
    /// (none given, or none for the recipients it was written to): nothing
    /// was touched. The message names the recipients.
    KeyRequired = 22,
    /// A set's manifest is not signed by a pinned verifying key (unsigned,
    /// or its signature does not match): it may not have been written by
    /// wpdr, so nothing was restored from it.
    Untrusted = 23,
    /// A secure connection to a database server could not be made: it offers
    /// no TLS where `database.tls` requires it, or its certificate does not
    /// verify against the CA (wrong CA, wrong host name, expired).
    TlsFailed = 24,
    /// Interrupted by a signal.
    Interrupted = 130,
}

impl ExitCode {
    /// Every code, in order.
    pub const ALL: [ExitCode; 26] = [
        ExitCode::Ok,
        ExitCode::Internal,
        ExitCode::Usage,
        ExitCode::Config,
        ExitCode::DatabaseUnreachable,
        ExitCode::DatabaseAuth,
        ExitCode::StoreUnavailable,
        ExitCode::SetNotFound,
        ExitCode::Integrity,
        ExitCode::Locked,
        ExitCode::TargetNotEmpty,
        ExitCode::RestoreMismatch,
        ExitCode::Database,
        ExitCode::StoreAuth,
        ExitCode::MediaIncomplete,
        ExitCode::Timeout,
        ExitCode::ReplicaUnusable,
        ExitCode::BinlogGap,
        ExitCode::NotRecoverable,
        ExitCode::Unsupported,
        ExitCode::SchemaChanged,
        ExitCode::Partial,
        ExitCode::KeyRequired,
        ExitCode::Untrusted,
        ExitCode::TlsFailed,
        ExitCode::Interrupted,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// The code a journal or report recorded as a number; unknown numbers are `Internal`.
    pub fn from_code(code: u8) -> ExitCode {
        Self::ALL
            .into_iter()
            .find(|c| c.code() == code)
            .unwrap_or(ExitCode::Internal)
    }
}

/// Implemented by every module's error enum: which exit code it maps to and a
/// short, stable label a dashboard can count failures by.
pub trait Classify {
    fn exit_code(&self) -> ExitCode;
    fn metric_label(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` lists every variant: this match stops compiling when one is added.
    #[test]
    fn all_lists_every_code_once() {
        for (i, c) in ExitCode::ALL.iter().enumerate() {
            let index = match c {
                ExitCode::Ok => 0,
                ExitCode::Internal => 1,
                ExitCode::Usage => 2,
                ExitCode::Config => 3,
                ExitCode::DatabaseUnreachable => 4,
                ExitCode::DatabaseAuth => 5,
                ExitCode::StoreUnavailable => 6,
                ExitCode::SetNotFound => 7,
                ExitCode::Integrity => 8,
                ExitCode::Locked => 9,
                ExitCode::TargetNotEmpty => 10,
                ExitCode::RestoreMismatch => 11,
                ExitCode::Database => 12,
                ExitCode::StoreAuth => 13,
                ExitCode::MediaIncomplete => 14,
                ExitCode::Timeout => 15,
                ExitCode::ReplicaUnusable => 16,
                ExitCode::BinlogGap => 17,
                ExitCode::NotRecoverable => 18,
                ExitCode::Unsupported => 19,
                ExitCode::SchemaChanged => 20,
                ExitCode::Partial => 21,
                ExitCode::KeyRequired => 22,
                ExitCode::Untrusted => 23,
                ExitCode::TlsFailed => 24,
                ExitCode::Interrupted => 25,
            };
            assert_eq!(index, i, "{c:?} is out of place in ExitCode::ALL");
        }
    }
}
