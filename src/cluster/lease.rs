//! One leader among daemon replicas, through a `coordination.k8s.io/v1` Lease.
//!
//! The holder renews `renewTime` well within `leaseDurationSeconds`; another
//! replica takes the Lease over only once it has expired. Every write is a
//! `replace` carrying the `resourceVersion` that was read, so of two replicas
//! racing for an expired Lease exactly one wins (the other gets 409 Conflict).

use super::ClusterError;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use std::time::Duration;

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How often the holder should renew.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    fn err(&self, doing: &str, source: kube::Error) -> ClusterError {
        ClusterError::Api {
            doing: format!("{doing} Lease {}", self.name),
            source,
        }
    }

    /// Takes or renews the Lease. `Ok(true)`: this replica leads until at least
    /// `duration` from now. `Ok(false)`: another replica holds it (or won a race).
    pub async fn try_acquire_or_renew(&self) -> Result<bool, ClusterError> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs())
            .unwrap_or(i32::MAX)
            .max(1);
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err("reading", e))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(self.err("creating", e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let held_for =
            SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(seconds)));
        let expired = match (&spec.holder_identity, &spec.renew_time) {
            (None, _) | (_, None) => true,
            (Some(_), Some(renewed)) => renewed
                .0
                .checked_add(held_for)
                .map_or(true, |until| until < now),
        };
        if !mine && !expired {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(self.err("updating", e)),
        }
    }

    /// Gives the Lease up at shutdown so another replica need not wait for it to expire.
    pub async fn release(&self) -> Result<(), ClusterError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err("reading", e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(self.err("releasing", e)),
        }
    }

    /// The current holder, for status output.
    pub async fn holder(&self) -> Result<Option<String>, ClusterError> {
        Ok(self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err("reading", e))?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity))
    }
}
