//! Claims on a shared (server-wide) archive. One archive serves every site
//! on a database server; each site still decides, from its own sets and
//! PITR window, which transactions it may have to replay. A site writes that
//! floor as a claim under the archive (its backups and prunes renew it);
//! the archive's prune deletes a segment only when every live claim is past
//! it. A claim holds for `claim_days` without renewal, so a deleted site
//! stops holding the archive back, and a site whose jobs stopped is
//! reported long before it lapses.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::gtid::GtidPos;
use super::BinlogError;
use crate::catalog::SetSummary;
use crate::store::Store;

/// The oldest point one site may replay from, and how long that holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claim {
    pub site: String,
    /// The snapshot time of the set the site's oldest kept restore starts from.
    pub floor_time: DateTime<Utc>,
    /// That set's GTID position: segments ending at or before it are not needed.
    pub floor_position: GtidPos,
    pub renewed_at: DateTime<Utc>,
    /// After this, without renewal, the claim no longer holds segments.
    pub holds_until: DateTime<Utc>,
}

impl Claim {
    pub fn holds_at(&self, now: DateTime<Utc>) -> bool {
        self.holds_until > now
    }

    /// The floor as the prune takes it.
    pub fn floor(&self) -> (DateTime<Utc>, GtidPos) {
        (self.floor_time, self.floor_position.clone())
    }
}

pub fn claims_prefix(archive_prefix: &str) -> String {
    format!("{archive_prefix}/binlog/claims/")
}

pub fn claim_key(archive_prefix: &str, site: &str) -> String {
    format!("{}{site}.json", claims_prefix(archive_prefix))
}

/// What [`renew`] wrote, for the job reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClaimReport {
    pub archive: String,
    /// `None`: the site has no set with a position yet, so it needs nothing
    /// of the archive and holds nothing back.
    pub claim: Option<Claim>,
}

/// Writes (or replaces) `site`'s claim on the archive under
/// `archive_prefix` from the sets it keeps. A dry run computes it only.
#[allow(clippy::too_many_arguments)]
pub async fn renew(
    store: &Store,
    archive: &str,
    archive_prefix: &str,
    site: &str,
    sets: &[SetSummary],
    pitr_days: Option<u64>,
    claim_days: u64,
    dry_run: bool,
) -> Result<ClaimReport, BinlogError> {
    let now = Utc::now();
    let claim = super::prune::replay_floor(sets, now, pitr_days).map(|(time, position)| Claim {
        site: site.to_string(),
        floor_time: time,
        floor_position: position,
        renewed_at: now,
        holds_until: now + chrono::Duration::days(claim_days as i64),
    });
    if let (Some(c), false) = (&claim, dry_run) {
        let body = serde_json::to_vec_pretty(c).map_err(|e| BinlogError::Damaged {
            key: claim_key(archive_prefix, site),
            detail: e.to_string(),
        })?;
        store
            .put_bytes(&claim_key(archive_prefix, site), body.into())
            .await?;
    }
    Ok(ClaimReport {
        archive: archive.to_string(),
        claim,
    })
}

/// Every claim on the archive, live or lapsed.
pub async fn list(store: &Store, archive_prefix: &str) -> Result<Vec<Claim>, BinlogError> {
    // A claim that cannot be read cannot be honoured either: stop, so a
    // damaged claim never lets the segments it protects go.
    super::read_all_json(
        store,
        &claims_prefix(archive_prefix),
        " (a claim on the shared archive; rewrite it by running `wpdr prune` for that site, or delete it if the site is gone)",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_holds_until_its_time_and_not_after() {
        let now = Utc::now();
        let c = Claim {
            site: "a".into(),
            floor_time: now,
            floor_position: GtidPos::parse("0-1-5").unwrap(),
            renewed_at: now,
            holds_until: now + chrono::Duration::days(1),
        };
        assert!(c.holds_at(now));
        assert!(!c.holds_at(now + chrono::Duration::days(1)));
        assert_eq!(
            claim_key("p/.archives/db1", "a"),
            "p/.archives/db1/binlog/claims/a.json"
        );
    }
}
