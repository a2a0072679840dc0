//! The command tree.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "wpdr",
    version,
    about = "Backup and disaster recovery for WordPress on Kubernetes"
)]
pub struct Cli {
    /// Configuration file (YAML). Every setting can also come from WPDR_* environment variables.
    #[arg(long, short = 'c', global = true, env = "WPDR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Output format for results on stdout.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Log format on stderr (json is the default when stderr is not a terminal).
    #[arg(long, global = true, value_enum, env = "WPDR_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Only warnings and errors in the log, and no progress bars.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// More detail in the log (-v debug, -vv trace).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// age identity file (AGE-SECRET-KEY-1…) that opens encrypted sets:
    /// restore, verify --deep, drills and PITR need it when the sets were
    /// written with encryption.recipients. Overrides encryption.identity_file
    /// and WPDR_IDENTITY_FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take one backup set: the database snapshot, plus the namespace's objects and image digests when cluster.namespace is set.
    Backup(BackupArgs),
    /// List and inspect backup sets.
    #[command(subcommand)]
    Sets(SetsCommand),
    /// Re-read every artifact of a set and check its size and SHA-256.
    Verify {
        /// Set id, or `latest`.
        set: String,
        /// Also open and decompress every compressed artifact to its end, as a
        /// restore would (needs --identity for an encrypted set).
        #[arg(long)]
        deep: bool,
    },
    /// Restore a whole site into a fresh namespace (`restore <set> --namespace NEW`),
    /// resume one (`restore --resume ID`), or restore one part (`restore db|media|cluster`).
    Restore(RestoreArgs),
    /// Restore the newest set into a throw-away namespace, check it, report RTO and RPO, tear it down.
    Drill(DrillArgs),
    /// The media library's offsite mirror.
    #[command(subcommand)]
    Media(MediaCommand),
    /// The primary's binary log, archived continuously for point-in-time restores.
    #[command(subcommand)]
    Binlog(BinlogCommand),
    /// Replace the site URL everywhere in a database (a restored copy served at another
    /// address): safe inside PHP-serialised data and JSON; reports what it cannot parse.
    RewriteUrl(RewriteUrlArgs),
    /// Apply the retention policy: delete sets no rule keeps, and the files of
    /// interrupted runs older than the grace period.
    Prune {
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The site's backup state: newest set and its age (RPO now), counts, lock.
    Status,
    /// Run the schedules of a directory (backups, prune, verification) until SIGTERM.
    Daemon(DaemonArgs),
    /// Create the keys that protect sets: an age key pair (encryption) or an
    /// ed25519 signing key. The secret goes to a 0600 file; the public half
    /// is printed, to put in the config.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Validate the configuration (and a schedules directory) without touching any server.
    CheckConfig {
        /// Also validate the schedule files here and show their next runs.
        #[arg(long)]
        schedules: Option<PathBuf>,
    },
    /// Print a shell completion script (the image ships them under
    /// /usr/share/bash-completion, zsh and fish's vendor directories).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the manual page (roff): `wpdr man | man -l -`; `--dir` writes
    /// one page per command there too (wpdr-backup.1, wpdr-restore-db.1, ...).
    Man {
        /// Write wpdr.1 and a page for every subcommand into this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Many sites per cluster: the Site custom resource (sites.wpdr.io).
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Run every Site's schedules as Kubernetes Jobs, within caps per
    /// database server and S3 endpoint, and keep each Site's status (the
    /// fleet controller; until SIGTERM).
    Controller(ControllerArgs),
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// The Jobs' image, service account, resources, node selector and
    /// tolerations (YAML; the chart renders it from its values).
    #[arg(long, env = "WPDR_JOB_TEMPLATE", value_name = "FILE")]
    pub job_template: PathBuf,
    /// Jobs at once across the fleet.
    #[arg(long, default_value_t = 20, env = "WPDR_MAX_JOBS")]
    pub max_jobs: usize,
    /// Jobs at once against one database server (host:port).
    #[arg(long, default_value_t = 2, env = "WPDR_PER_DATABASE")]
    pub per_database: usize,
    /// Jobs at once against one S3 endpoint.
    #[arg(long, default_value_t = 8, env = "WPDR_PER_ENDPOINT")]
    pub per_endpoint: usize,
    /// Seconds between rounds.
    #[arg(long, default_value_t = 30, env = "WPDR_ROUND_SECONDS")]
    pub every_seconds: u64,
    /// Address for /healthz, /readyz and /metrics (one series per Site).
    #[arg(long, default_value = "0.0.0.0:9465", env = "WPDR_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// A site whose newest set is older than this many hours counts as out of RPO.
    #[arg(long, default_value_t = 26)]
    pub rpo_hours: i64,
    /// One round, print what it did, exit.
    #[arg(long)]
    pub once: bool,
    /// One round that creates and writes nothing: print what would start.
    #[arg(long)]
    pub dry_run: bool,
    /// Plan only while holding a coordination.k8s.io Lease (for several replicas).
    #[arg(long, env = "WPDR_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Namespace of the Lease (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (in a pod: its name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Every Site with its newest set's age, last drill and error, worst
    /// first, and counts for a dashboard (sites failing, out of RPO, never
    /// drilled). Reads the Sites' status only.
    Status {
        /// A site whose newest set is older than this many hours is out of RPO.
        #[arg(long, default_value_t = 26)]
        rpo_hours: i64,
    },
    /// Run one scheduled job of a site and write its outcome (and the site's
    /// state) to a file: what each fleet Job runs, with the outcome going to
    /// its termination message for the controller.
    RunJob {
        /// backup, media-sync, prune, verify-latest or drill.
        #[arg(long)]
        job: String,
        /// The schedule's name (recorded in a backup's manifest).
        #[arg(long)]
        schedule: String,
        /// Where to write the outcome JSON (a Job: /dev/termination-log).
        #[arg(long)]
        outcome_file: PathBuf,
    },
    /// Print the Site CustomResourceDefinition (the chart ships it in crds/).
    Crd,
    /// Check Site manifests as their Jobs will load them (no credential
    /// inline, no identity, the configuration valid); nothing is contacted.
    Check {
        /// YAML files holding Site objects (several per file, `---` between).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// An age X25519 identity (what `age-keygen` makes): the printed
    /// recipient goes in encryption.recipients; the file, kept off the
    /// cluster, is the --identity a restore needs.
    Age {
        /// Where to write the identity (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// An ed25519 signing key for manifests: the file is the backup side's
    /// Secret (signing.key_file / WPDR_SIGNING_KEY_FILE); the printed
    /// verifying key goes in the restore side's signing.verify_keys.
    Signing {
        /// Where to write the signing key (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Directory of schedule files (*.yaml).
    #[arg(long, default_value = "schedules", env = "WPDR_SCHEDULES")]
    pub schedules: PathBuf,
    /// Address for /healthz, /readyz, /metrics and POST /run/<schedule>.
    #[arg(long, default_value = "0.0.0.0:9464", env = "WPDR_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// After SIGTERM, how long running jobs may take to finish before they are abandoned.
    #[arg(long, default_value_t = 300, env = "WPDR_GRACE_SECONDS")]
    pub grace_seconds: u64,
    /// Run jobs only while holding a coordination.k8s.io Lease (for several replicas).
    #[arg(long, env = "WPDR_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Namespace of the Lease (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the Lease (default: wpdr-<site>).
    #[arg(long, env = "WPDR_LEASE_NAME")]
    pub lease_name: Option<String>,
    /// This replica's identity in the Lease (in a pod: its name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a Lease holds without renewal.
    #[arg(long, default_value_t = 30, env = "WPDR_LEASE_SECONDS")]
    pub lease_seconds: u64,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Schedule name recorded in the manifest.
    #[arg(long, default_value = "manual")]
    pub schedule: String,
    /// Show what would be backed up, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum SetsCommand {
    /// Complete sets, newest first.
    List,
    /// What a set holds: artifacts, sizes, binlog position, tables.
    Show {
        /// Set id, or `latest`.
        set: String,
    },
    /// The window a point-in-time restore can reach: oldest and newest
    /// restorable second, per set, and any gap in the binlog archive.
    Recoverable,
}

#[derive(Debug, Subcommand)]
pub enum BinlogCommand {
    /// Follow the primary's binary log and write segments to the store until
    /// stopped (SIGTERM/Ctrl-C closes the open segment first).
    Archive {
        /// Stop once caught up with the primary (for a CronJob, or a first catch-up).
        #[arg(long)]
        until_caught_up: bool,
        /// Stop after this many seconds.
        #[arg(long = "for", value_name = "SECONDS")]
        run_for: Option<u64>,
    },
    /// Delete the segments no kept restore can replay: a site's own archive
    /// by its sets, a shared server archive (database.binlog.archive) by the
    /// claims of the sites on it. (`wpdr prune` does the first on its own.)
    Prune {
        /// Report what would go; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Mirror the uploads bucket offsite now (a backup also does this, then indexes the set).
    Sync {
        /// Plan only: count what would be copied, retained and deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Allow more deletions than media.max_deletes / max_delete_percent (each is still retained first).
        #[arg(long)]
        confirm_deletes: bool,
    },
}

#[derive(Debug, Args)]
pub struct RewriteUrlArgs {
    /// Server: mysql://user@host:port/database (password in WPDR_TARGET_PASSWORD).
    #[arg(long)]
    pub target: String,
    /// Database (default: from the URL).
    #[arg(long)]
    pub database: Option<String>,
    /// The URL the data holds now, e.g. https://shop.example.com
    #[arg(long)]
    pub from: String,
    /// The URL the site is served at from now on.
    #[arg(long)]
    pub to: String,
    /// Count what would change per table and column; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RestoreMediaArgs {
    /// Set id, or `latest` (or, instead, --to-time).
    #[arg(required_unless_present = "to_time")]
    pub set: Option<String>,
    /// The media as it was at this moment (2026-11-25T10:00:00Z), from the
    /// mirror runs around it: uploads written before it, as the versions
    /// they were then; none written after.
    #[arg(long, conflicts_with = "set", value_parser = crate::binlog::replay::Point::parse_time)]
    pub to_time: Option<crate::binlog::replay::Point>,
    /// The bucket to fill (created when missing). Use a fresh one.
    #[arg(long)]
    pub target_bucket: String,
    /// S3 endpoint of the target (default: media.source's endpoint). Credentials
    /// come from WPDR_MEDIA_TARGET_ACCESS_KEY_ID / WPDR_MEDIA_TARGET_SECRET_ACCESS_KEY,
    /// else media.source's.
    #[arg(long)]
    pub target_endpoint: Option<String>,
    /// Show what would be copied, from where; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Re-read every restored object at the end and compare its SHA-256.
    #[arg(long)]
    pub deep_verify: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RestoreArgs {
    #[command(subcommand)]
    pub part: Option<RestoreCommand>,
    /// Set id, or `latest`.
    pub set: Option<String>,
    /// The namespace to bring the site back into (a fresh one).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Plan: a built-in name (full, site, db-only, media-only, drill) or a YAML file.
    #[arg(long, default_value = "full")]
    pub plan: String,
    /// The restored site's address: rewritten into its data, and where the checks ask it.
    #[arg(long)]
    pub site_url: Option<String>,
    /// Print the plan, what each step touches and how long it took last time; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Resume a stopped restore by id: every step not done runs again.
    #[arg(long, conflicts_with_all = ["set", "namespace", "dry_run"])]
    pub resume: Option<String>,
    /// The namespace exists already (created by GitOps, or the role may not create namespaces).
    #[arg(long)]
    pub no_create_namespace: bool,
    /// With --resume: take over a restore whose journal says it is still running
    /// (its process is gone, on another host).
    #[arg(long, requires = "resume")]
    pub force: bool,
    /// The whole site as it was at this moment (2026-11-25T10:00:00Z): the
    /// newest set before it (or the named one), the database replayed from
    /// the binlog archive to it, the media as the mirror's runs saw it then.
    #[arg(long, conflicts_with = "resume", value_parser = crate::binlog::replay::Point::parse_time)]
    pub to_time: Option<crate::binlog::replay::Point>,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Set id, or `latest`.
    #[arg(long, default_value = "latest")]
    pub set: String,
    /// Plan: a built-in name or a YAML file.
    #[arg(long, default_value = "drill")]
    pub plan: String,
    /// The drill site's address (default: restore.site_url).
    #[arg(long)]
    pub site_url: Option<String>,
    /// Leave the restored namespace, database and bucket in place.
    #[arg(long)]
    pub keep: bool,
    /// Also write the report (JSON) here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Also write the drill's metrics here (Prometheus textfile format).
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    /// Drill a point-in-time restore: the site as it was at this moment.
    #[arg(long, value_parser = crate::binlog::replay::Point::parse_time)]
    pub to_time: Option<crate::binlog::replay::Point>,
}

#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Load a set's database into a server and check it against the manifest.
    Db(RestoreDbArgs),
    /// Fill a bucket with exactly the set's media (versions as of the set), resumable.
    Media(RestoreMediaArgs),
    /// Apply a set's namespace objects into a fresh namespace, images pinned to recorded digests.
    Cluster(RestoreClusterArgs),
}

#[derive(Debug, Args)]
pub struct RestoreClusterArgs {
    /// Set id, or `latest`.
    pub set: String,
    /// The namespace to restore into (created if missing).
    #[arg(long)]
    pub namespace: String,
    /// Rewrite an Ingress host, e.g. --host-map shop.example.com=drill.example.com (repeatable).
    #[arg(long = "host-map", value_parser = parse_host_map)]
    pub host_map: Vec<(String, String)>,
    /// Restore without the set's Secrets (when the key is lost).
    #[arg(long)]
    pub skip_secrets: bool,
    /// Apply even if the namespace already runs workloads.
    #[arg(long)]
    pub force: bool,
    /// Print the objects and image pins, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The namespace exists already (created by GitOps, or the role may not create namespaces).
    #[arg(long)]
    pub no_create_namespace: bool,
}

fn parse_host_map(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
        _ => Err(format!("'{s}' is not OLD=NEW")),
    }
}

#[derive(Debug, Args)]
pub struct RestoreDbArgs {
    /// Set id, or `latest`.
    pub set: String,
    /// Target server: mysql://user@host:port[/database]. The password comes from
    /// WPDR_TARGET_PASSWORD, else restore.database_password_file (never the URL).
    #[arg(long)]
    pub target: String,
    /// Database name to restore into (default: from the URL, else the original name).
    #[arg(long)]
    pub database: Option<String>,
    /// Drop and recreate the target database if it already holds objects.
    #[arg(long)]
    pub force: bool,
    /// Parallel load connections (default: database.connections from the config).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Show what would be restored and check the target, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep secondary indexes in the CREATE TABLE during the load (slower;
    /// by default they are built by sorting after the data is in).
    #[arg(long)]
    pub no_defer_indexes: bool,
    /// Send the set's INSERT statements as they are instead of their rows as
    /// LOAD DATA LOCAL (slower; automatic when the server disables local_infile).
    #[arg(long)]
    pub sql_inserts: bool,
    /// Point in time: restore the newest set before it and replay the
    /// archived binary log up to it (2026-11-25T10:00:00Z; whole seconds,
    /// server clock). Every transaction committed before it, none after.
    #[arg(long, conflicts_with = "to_gtid", value_parser = crate::binlog::replay::Point::parse_time)]
    pub to_time: Option<crate::binlog::replay::Point>,
    /// Point by GTID position: replay up to and including this transaction (e.g. 0-1-4711).
    #[arg(long, value_parser = crate::binlog::replay::Point::parse_gtid)]
    pub to_gtid: Option<crate::binlog::replay::Point>,
    /// A replica to seed from the restored primary once it is restored (and
    /// replayed), then start replicating at the GTID of that snapshot:
    /// mysql://user@host:port (repeatable; password as for --target). The
    /// replica reaches the primary at --target's host and port, as --target's user.
    #[arg(long = "replica", value_name = "URL")]
    pub replicas: Vec<String>,
    /// How long each replica may take to catch up with the primary.
    #[arg(long, default_value_t = 300)]
    pub replica_timeout_seconds: u64,
}
