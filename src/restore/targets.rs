//! Where a restore puts each component, resolved for one namespace.

use crate::catalog::Manifest;
use crate::config::{CacheServer, Config, Endpoint, RestoreTargets, S3Config};

/// The restored components' addresses for one namespace.
#[derive(Clone)]
pub struct Targets {
    pub namespace: String,
    pub database: Option<(Endpoint, String)>,
    pub media: Option<S3Config>,
    pub caches: Vec<CacheServer>,
    /// Where the restored site answers, and the address rewritten into its data.
    pub site_url: Option<String>,
}

impl Targets {
    /// `cfg.restore`'s templates for `namespace`; a database target named
    /// by URL connects with `database.tls` unless its URL says otherwise.
    pub fn resolve(
        cfg: &Config,
        manifest: &Manifest,
        namespace: &str,
        site_url: Option<&str>,
    ) -> Targets {
        let targets = &cfg.restore;
        let ns = |t: &str| RestoreTargets::in_namespace(t, namespace);
        let database = targets.database.as_ref().and_then(|t| {
            let password =
                Some(targets.database_password.expose().to_string()).filter(|p| !p.is_empty());
            Endpoint::from_url(&ns(t), password, &cfg.database.tls)
                .ok()
                .map(|(e, db)| {
                    let name = db
                        .or_else(|| manifest.database.as_ref().map(|d| d.database.clone()))
                        .unwrap_or_else(|| "wordpress".into());
                    (e, name)
                })
        });
        Targets {
            namespace: namespace.to_string(),
            database,
            media: targets.media_for(namespace),
            caches: targets
                .caches
                .iter()
                .filter_map(|c| CacheServer::parse(&ns(c)).ok())
                .collect(),
            site_url: site_url
                .map(str::to_string)
                .or_else(|| targets.site_url.as_deref().map(ns))
                .map(|u| u.trim_end_matches('/').to_string()),
        }
    }
}
