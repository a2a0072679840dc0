//! How a site's Job tells the controller what happened, without the
//! controller ever holding the site's credentials: the Job runs the job and
//! then reads the site's status from its store, and writes both as a short
//! JSON to its container's termination message (`/dev/termination-log`,
//! which Kubernetes keeps in the Pod's status, at most 4 KiB). The
//! controller reads it from the Pod and writes it into the Site's status.

use super::site::{DrillStatus, SiteStatus};
use crate::jobs::status::Status;
use crate::jobs::Verdict;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What Kubernetes keeps of a termination message.
pub const MESSAGE_LIMIT: usize = 4096;

/// One Job's result and the site's state after it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JobOutcome {
    pub job: String,
    pub schedule: String,
    pub ok: bool,
    pub exit: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub finished_at: DateTime<Utc>,
    /// The site as its store shows it after the job (None when the store
    /// could not be read: the reason is in `message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteSummary>,
}

/// The part of `wpdr status` a Site's status shows.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SiteSummary {
    pub newest_set: Option<String>,
    pub newest_set_time: Option<DateTime<Utc>>,
    pub recoverable_from: Option<DateTime<Utc>>,
    pub recoverable_to: Option<DateTime<Utc>>,
    pub open_gaps: usize,
    pub last_drill: Option<DrillStatus>,
}

impl SiteSummary {
    pub fn of(status: &Status) -> Self {
        let newest = status.sets.first();
        SiteSummary {
            newest_set: newest.map(|s| s.id.clone()),
            newest_set_time: newest.map(|s| s.started_at),
            recoverable_from: status.window.oldest,
            recoverable_to: status.window.newest,
            open_gaps: status.window.open_gaps,
            last_drill: status.last_drill.as_ref().map(|d| DrillStatus {
                result: if d.ok { "Passed" } else { "Failed" }.into(),
                at: d.finished_at.to_rfc3339(),
                rto_seconds: Some(d.rto_seconds.round() as i64),
                rpo_seconds: Some(d.rpo_seconds.round() as i64),
            }),
        }
    }
}

impl JobOutcome {
    pub fn new(job: &str, schedule: &str, verdict: &Verdict, site: Option<SiteSummary>) -> Self {
        JobOutcome {
            job: job.to_string(),
            schedule: schedule.to_string(),
            ok: verdict.is_ok(),
            exit: verdict.exit.code(),
            reason: verdict.reason.map(str::to_string),
            message: verdict.message.clone(),
            finished_at: Utc::now(),
            site,
        }
    }

    /// The JSON for the termination message, within Kubernetes' limit:
    /// the message is shortened (on a character boundary) to fit.
    pub fn to_message(&self) -> String {
        let mut out = self.clone();
        loop {
            let text = serde_json::to_string(&out).unwrap_or_else(|_| "{}".into());
            if text.len() <= MESSAGE_LIMIT {
                return text;
            }
            let Some(msg) = out.message.as_mut() else {
                out.site = None;
                continue;
            };
            let over = text.len() - MESSAGE_LIMIT + 4;
            let mut keep = msg.len().saturating_sub(over.max(msg.len() / 4));
            while !msg.is_char_boundary(keep) {
                keep -= 1;
            }
            msg.truncate(keep);
            msg.push('…');
            if keep == 0 {
                out.message = None;
            }
        }
    }

    pub fn parse(message: &str) -> Option<JobOutcome> {
        serde_json::from_str(message.trim()).ok()
    }

    /// Writes what this outcome says about the site into its status.
    pub fn apply(&self, status: &mut SiteStatus) {
        if let Some(site) = &self.site {
            status.newest_set = site.newest_set.clone();
            status.newest_set_time = site.newest_set_time.map(|t| t.to_rfc3339());
            status.recoverable_from = site.recoverable_from.map(|t| t.to_rfc3339());
            status.recoverable_to = site.recoverable_to.map(|t| t.to_rfc3339());
            status.open_gaps = Some(site.open_gaps as i64);
            if site.last_drill.is_some() {
                status.last_drill = site.last_drill.clone();
            }
        }
        status.last_error = match (&self.reason, &self.message, self.ok) {
            (_, _, true) => None,
            (reason, message, false) => Some(format!(
                "{} ({}): {}",
                self.schedule,
                reason.as_deref().unwrap_or("failed"),
                message.as_deref().unwrap_or("no reason given")
            )),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitCode;

    #[test]
    fn an_outcome_fits_the_termination_message_and_reads_back() {
        let long = "é".repeat(5000);
        let v = Verdict::failed(ExitCode::Database, "mysql", long);
        let o = JobOutcome::new("backup", "nightly", &v, Some(SiteSummary::default()));
        let text = o.to_message();
        assert!(text.len() <= MESSAGE_LIMIT, "{}", text.len());
        let back = JobOutcome::parse(&text).expect("parses");
        assert!(!back.ok);
        assert_eq!(back.reason.as_deref(), Some("mysql"));
        assert!(back.message.unwrap().ends_with('…'));
        let mut status = SiteStatus::default();
        JobOutcome::parse(&text).unwrap().apply(&mut status);
        assert!(status
            .last_error
            .unwrap()
            .starts_with("nightly (mysql): éé"));
        // A success clears the error and carries the site's state.
        let ok = JobOutcome::new(
            "backup",
            "nightly",
            &Verdict::ok(10, 1),
            Some(SiteSummary {
                newest_set: Some("20261130T020000Z".into()),
                open_gaps: 1,
                ..Default::default()
            }),
        );
        let mut status = SiteStatus {
            last_error: Some("old".into()),
            ..Default::default()
        };
        JobOutcome::parse(&ok.to_message())
            .unwrap()
            .apply(&mut status);
        assert_eq!(status.last_error, None);
        assert_eq!(status.newest_set.as_deref(), Some("20261130T020000Z"));
        assert_eq!(status.open_gaps, Some(1));
        assert_eq!(JobOutcome::parse("not json"), None);
    }
}
