//! `backup:` and `retention:` — how a backup is cut and how long sets are kept.

use super::overlay::{ByteSize, Env, Section};
use super::ConfigError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackup {
    chunk_size: Option<ByteSize>,
    compression_level: Option<i32>,
    lock_ttl_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetention {
    keep_last: Option<usize>,
    keep_daily: Option<usize>,
    keep_weekly: Option<usize>,
    keep_monthly: Option<usize>,
    keep_yearly: Option<usize>,
    incomplete_grace_hours: Option<i64>,
    pitr_days: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub chunk_bytes: u64,
    pub compression_level: i32,
    pub lock_ttl_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct RetentionConfig {
    pub policy: RetentionPolicy,
    /// Files of interrupted runs younger than this are left alone.
    pub incomplete_grace_hours: i64,
    /// How far back a point-in-time restore must reach, in days; binlog
    /// segments only older points need go even while an older (say yearly)
    /// set remains. `None`: as far back as any remaining set.
    pub pitr_days: Option<u64>,
}

/// Grandfather-father-son counts (`catalog::retention` applies them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    #[serde(default)]
    pub keep_last: usize,
    #[serde(default)]
    pub keep_daily: usize,
    #[serde(default)]
    pub keep_weekly: usize,
    #[serde(default)]
    pub keep_monthly: usize,
    #[serde(default)]
    pub keep_yearly: usize,
}

impl RetentionPolicy {
    /// A policy that keeps nothing beyond the newest set is almost certainly a mistake.
    pub fn is_empty(&self) -> bool {
        self.keep_last + self.keep_daily + self.keep_weekly + self.keep_monthly + self.keep_yearly
            == 0
    }
}

pub(crate) fn resolve_backup(b: &RawBackup, env: &dyn Env) -> Result<BackupConfig, ConfigError> {
    let s = Section::new(env, "backup", "WPDR_");
    let chunk_key = s.key("chunk_size", "CHUNK_SIZE");
    let chunk_bytes = chunk_key.size(&b.chunk_size)?.unwrap_or(64 << 20);
    let chunk_bytes = chunk_key.check(
        chunk_bytes,
        (1 << 20..=4 << 30).contains(&chunk_bytes),
        |c| format!("{c} bytes is outside 1MiB..4GiB"),
    )?;
    let level_key = s.key("compression_level", "COMPRESSION_LEVEL");
    // Level 1: a backup competes for CPU with the live site and the
    // database server; SQL text compresses well even at 1 (see BENCHMARKS.md).
    let compression_level =
        level_key.within(level_key.number(&b.compression_level)?.unwrap_or(1), 1..=19)?;
    let ttl_key = s.key("lock_ttl_seconds", "LOCK_TTL_SECONDS");
    let lock_ttl_seconds = ttl_key.within(
        ttl_key.number(&b.lock_ttl_seconds)?.unwrap_or(120),
        5..=86_400,
    )?;
    Ok(BackupConfig {
        chunk_bytes,
        compression_level,
        lock_ttl_seconds,
    })
}

pub(crate) fn resolve_retention(
    r: &RawRetention,
    env: &dyn Env,
) -> Result<RetentionConfig, ConfigError> {
    let s = Section::new(env, "retention", "WPDR_");
    let keep = |name: &str, var: &str, v: &Option<usize>| {
        s.key(name, var).number(v).map(|x| x.unwrap_or(0))
    };
    let policy = RetentionPolicy {
        keep_last: keep("keep_last", "KEEP_LAST", &r.keep_last)?,
        keep_daily: keep("keep_daily", "KEEP_DAILY", &r.keep_daily)?,
        keep_weekly: keep("keep_weekly", "KEEP_WEEKLY", &r.keep_weekly)?,
        keep_monthly: keep("keep_monthly", "KEEP_MONTHLY", &r.keep_monthly)?,
        keep_yearly: keep("keep_yearly", "KEEP_YEARLY", &r.keep_yearly)?,
    };
    let grace_key = s.key("incomplete_grace_hours", "INCOMPLETE_GRACE_HOURS");
    let grace = grace_key.number(&r.incomplete_grace_hours)?.unwrap_or(24);
    let incomplete_grace_hours =
        grace_key.check(grace, grace >= 0, |_| "must not be negative".into())?;
    let pitr_key = s.key("pitr_days", "PITR_DAYS");
    let pitr_days = match pitr_key.number(&r.pitr_days)? {
        Some(d) => Some(pitr_key.within(d, 1..=36_500)?),
        None => None,
    };
    Ok(RetentionConfig {
        policy,
        incomplete_grace_hours,
        pitr_days,
    })
}
