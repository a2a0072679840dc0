//! The backup-set format. `manifest.json` is written last and is the commit.
//! `format_version` changes whenever a reader of the old version would
//! misread a new set; readers refuse versions they do not know.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub set_id: String,
    pub site: String,
    /// Which schedule took the set (`manual` for a CLI run).
    pub schedule: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub wpdr_version: String,
    /// Every file of the set except the manifest, with size and SHA-256.
    pub artifacts: Vec<Artifact>,
    pub database: Option<DatabaseSection>,
    /// The namespace's objects and the image digests that ran (absent when not configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSection>,
    /// The media index taken after the database snapshot (absent without media).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaSection>,
    /// What the live site answered right after the database snapshot
    /// (absent when `wordpress.url` is not configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<SiteSection>,
    /// Parts that failed while the database was taken and committed: a
    /// partial set (Velero's PartiallyFailed). Empty: every configured part
    /// is in the set. The database is the set's anchor: without it nothing
    /// is committed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_parts: Vec<FailedPart>,
    /// Object Lock: every object of the set is retained at least until
    /// then (absent: no lock); prune leaves the set alone before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_until: Option<DateTime<Utc>>,
    /// Whom the set's artifacts are sealed to (absent: stored plain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSection>,
    /// Who wrote the manifest, as checked when it was loaded to be trusted
    /// (`None`: read for a listing, unchecked). Shown, never read from a
    /// stored manifest.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::trust::Verdict>,
}

/// The set's artifacts are age files sealed to these recipients: a
/// restore names them when it is given no identity that opens them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncryptionSection {
    /// `age1…` public keys.
    pub recipients: Vec<String>,
}

/// A part of a backup that is not in its set, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailedPart {
    /// `media` or `cluster`.
    pub part: String,
    pub reason: String,
    /// The exit code the part's failure alone would have had.
    pub exit_code: u8,
}

/// The live site's answers, for comparing a restored site with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SiteSection {
    pub url: String,
    pub captured_at: DateTime<Utc>,
    /// JSON list of answers, zstd; also in `artifacts`. `None` when the
    /// capture failed (`error` says why): the set is still a good backup.
    pub answers_artifact: Option<String>,
    /// Names and paths of what was captured, e.g. `home /`.
    #[serde(default)]
    pub answers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The server a backup read in a primary/replica cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReadFrom {
    /// `replica` or `primary`.
    pub role: String,
    pub server: String,
    pub lag_seconds: Option<u64>,
    /// The primary's GTID position the snapshot matches.
    pub primary_gtid: Option<String>,
    /// Why the primary was read although a replica was wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

/// The set's view of the media library: which versions it holds and where.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MediaSection {
    /// The uploads bucket and the offsite mirror, as `s3://bucket at endpoint`.
    pub source: String,
    pub offsite: String,
    /// Versions the source overwrote or deleted since are under this prefix offsite.
    pub retained_prefix: String,
    /// New offsite copies are sealed to the set's recipients (`media.encrypt`).
    #[serde(default)]
    pub sealed: bool,
    /// Sorted JSON lines (key, size, ETag, SHA-256), zstd; also in `artifacts`.
    pub index_artifact: String,
    pub objects: u64,
    pub bytes: u64,
    /// What the mirror run of this backup did.
    pub copied: u64,
    pub copied_bytes: u64,
    pub retained: u64,
    pub deleted: u64,
    /// Source objects the mirror could not copy: not in this set.
    pub not_mirrored_total: u64,
    #[serde(default)]
    pub not_mirrored: Vec<String>,
    /// Upload keys the database refers to that the index does not hold
    /// (listed up to a limit; the total counts all).
    pub missing_total: u64,
    #[serde(default)]
    pub missing: Vec<MissingMedia>,
    /// Attachment posts whose metadata could not be parsed (sizes unchecked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable_metadata: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes_refused: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MissingMedia {
    pub key: String,
    /// The attachment post that refers to it.
    pub post_id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterSection {
    pub namespace: String,
    /// Sanitised objects (JSON array, zstd), Secrets excluded.
    pub objects_artifact: String,
    pub objects: usize,
    /// Secrets sealed with AES-256-GCM; `None` when none were stored.
    pub secrets_artifact: Option<String>,
    pub secrets: usize,
    /// Why Secrets were not stored, when they were not (e.g. no key configured).
    pub secrets_skipped: Option<String>,
    pub images: Vec<ImageDigest>,
    /// Custom resource kinds recorded with the namespace (needed to apply them back).
    #[serde(default)]
    pub custom_resources: Vec<crate::config::CustomResourceKind>,
    /// Credentials found outside Secrets (a ConfigMap key, a literal container
    /// `env` value): named, never their values, so they can be moved to Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_credentials: Vec<ExposedCredential>,
}

/// One credential held where Secrets' protections do not apply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExposedCredential {
    /// `Kind/name`.
    pub object: String,
    /// Where in it: `data.DB_PASSWORD`, `container wordpress env WORDPRESS_DB_PASSWORD`.
    pub field: String,
}

/// One container of one workload: the image as written and the digests that ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageDigest {
    pub workload: String,
    pub container: String,
    pub init: bool,
    pub image: String,
    pub digests: Vec<String>,
    pub replicas_disagree: bool,
    pub tag_ambiguous: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Artifact {
    /// Relative to the set's directory, e.g. `db/2-data-0003-000001-wp_posts.sql.zst`.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatabaseSection {
    pub server_version: String,
    /// Name of the database that was backed up (a restore may choose another).
    pub database: String,
    /// `host:port` of the server read from; never credentials.
    pub source: String,
    pub default_charset: String,
    pub default_collation: String,
    pub consistency: Consistency,
    pub binlog: Option<BinlogPosition>,
    pub gtid_binlog_pos: Option<String>,
    /// On a replica: the primary's GTIDs applied at the snapshot, read while
    /// commits were blocked (absent on a primary, or in single-connection mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_slave_pos: Option<String>,
    /// The server's clock at the snapshot: no transaction in the set
    /// committed later (a point-in-time restore starts from a set before its point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_at: Option<DateTime<Utc>>,
    /// Which server of the cluster was read, and why (absent: the primary, no topology).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_from: Option<ReadFrom>,
    /// The largest SQL statement in any artifact: a restore target needs a
    /// `max_allowed_packet` at least this large.
    pub max_statement_bytes: u64,
    pub tables: Vec<TableEntry>,
    /// Objects of the database that are not in the set, and why (only what
    /// `database.skip` names: anything else wpdr cannot take fails the backup).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedObject>,
    /// Views, routines, triggers and events: created after the data, in this order.
    pub objects: Vec<SchemaObject>,
    /// Total uncompressed SQL bytes written.
    pub raw_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Consistency {
    /// `backup-stage-block-commit`, `flush-tables-with-read-lock` or `single-connection`.
    pub method: String,
    pub connections: usize,
    /// How long commits were held still while the workers opened their
    /// snapshots (and the non-transactional tables were read).
    pub commits_blocked_ms: f64,
    /// Tables whose rows are not from the snapshot's moment: non-transactional
    /// engines (MyISAM, Aria, ...) read while commits could not be held (one
    /// connection, or no privilege to hold them). Empty: every table is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_at_snapshot: Vec<String>,
}

/// Something in the database that the set does not hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SkippedObject {
    /// `table`, `sequence`, `view`, `procedure`, `function`, `trigger` or `event`.
    pub kind: String,
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BinlogPosition {
    pub file: String,
    pub position: u64,
}

/// `file:position`, as mariadb-binlog's --start-position users write it.
impl std::fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.position)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableEntry {
    pub name: String,
    pub engine: String,
    /// Columns whose values are stored (generated columns are schema only).
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
    pub rows: u64,
    /// Order-independent content checksum of the stored columns, computed while
    /// reading inside the snapshot; see `mysql::checksum`.
    pub checksum: String,
    pub schema_artifact: String,
    pub data_artifacts: Vec<String>,
    #[serde(default, skip_serializing_if = "TableKind::is_table")]
    pub kind: TableKind,
    /// Why the set holds this table's definition but not its rows (an engine
    /// that keeps them elsewhere, e.g. FEDERATED); `None`: the rows are in the set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_not_stored: Option<String>,
}

/// What a table is, which decides how it is read, restored and verified.
/// Older wpdr versions read sets with sequences or versioned tables as plain
/// tables and fail their verification loudly (never a silent misread), so
/// the format version stays.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TableKind {
    #[default]
    Table,
    /// A MariaDB sequence: its definition and its next value (`SETVAL` in the
    /// schema artifact), one row to verify, no data artifacts.
    Sequence,
    /// A system-versioned table: every row version, current and history,
    /// with the period columns (`columns` ends with them), read `FOR
    /// SYSTEM_TIME ALL` and loaded with `system_versioning_insert_history`.
    SystemVersioned,
}

impl TableKind {
    fn is_table(&self) -> bool {
        *self == TableKind::Table
    }

    pub fn label(&self) -> &'static str {
        match self {
            TableKind::Table => "table",
            TableKind::Sequence => "sequence",
            TableKind::SystemVersioned => "system-versioned table",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SchemaObject {
    /// `view`, `function`, `procedure`, `trigger` or `event`.
    pub kind: String,
    pub name: String,
    pub artifact: String,
    /// How the restored object differs from the source's, in words (e.g. its
    /// DEFINER removed, so it runs with the restoring account's privileges).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
}

impl Manifest {
    pub fn artifact(&self, path: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.path == path)
    }

    /// Why `part` is missing from this set, when it failed at backup.
    pub fn failed_part(&self, part: &str) -> Option<&FailedPart> {
        self.failed_parts.iter().find(|p| p.part == part)
    }

    /// The recipients the set is sealed to (empty: stored plain).
    pub fn recipients(&self) -> &[String] {
        self.encryption
            .as_ref()
            .map(|e| e.recipients.as_slice())
            .unwrap_or_default()
    }

    pub fn total_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.size).sum()
    }

    /// When the snapshot was taken (older sets lack `snapshot_at`: their
    /// finish time bounds it).
    pub fn snapshot_time(&self) -> DateTime<Utc> {
        self.database
            .as_ref()
            .and_then(|d| d.snapshot_at)
            .unwrap_or(self.finished_at)
    }

    /// The GTID position a point-in-time replay after this set starts
    /// from, as the server wrote it (empty: the log's very start).
    pub fn replay_position(&self) -> Option<String> {
        let db = self.database.as_ref()?;
        let text = db
            .read_from
            .as_ref()
            .and_then(|r| r.primary_gtid.clone())
            .or_else(|| db.gtid_slave_pos.clone())
            .or_else(|| db.gtid_binlog_pos.clone().filter(|g| !g.is_empty()));
        match text {
            Some(text) => Some(text),
            // A MariaDB primary that recorded a binlog file and position but no
            // GTID had logged nothing since its log was reset (RESET MASTER, a
            // new server): the set is at the log's very start, the empty
            // position, and every transaction archived from there follows it.
            None if db.binlog.is_some()
                && db.read_from.is_none()
                && db.server_version.to_ascii_lowercase().contains("mariadb") =>
            {
                Some(String::new())
            }
            None => None,
        }
    }
}

#[cfg(test)]
impl Manifest {
    /// A set with nothing in it (for tests of what reads manifests).
    pub(crate) fn empty_for_tests(set_id: &str, site: &str) -> Manifest {
        let now = chrono::Utc::now();
        Manifest {
            format_version: super::FORMAT_VERSION,
            set_id: set_id.into(),
            site: site.into(),
            schedule: "manual".into(),
            started_at: now,
            finished_at: now,
            wpdr_version: "test".into(),
            artifacts: Vec::new(),
            database: None,
            cluster: None,
            media: None,
            answers: None,
            failed_parts: Vec::new(),
            encryption: None,
            signature: None,
            retained_until: None,
        }
    }
}
