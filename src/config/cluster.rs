//! `cluster:` — what a backup records from Kubernetes, and the key that
//! seals the namespace's Secrets.

use super::overlay::{invalid, Env, Section};
use super::ConfigError;
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    namespace: Option<String>,
    secrets_key_file: Option<PathBuf>,
    #[serde(default)]
    custom_resources: Vec<CustomResourceKind>,
}

/// A custom resource kind to record with the namespace (e.g. a MariaDB operator's).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomResourceKind {
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The resource's plural name as in its URL (`mariadbs`).
    pub plural: String,
}

/// What a backup records from Kubernetes.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// The site's namespace; `None`: no cluster objects in sets.
    pub namespace: Option<String>,
    /// Key for sealing Secrets; without it Secrets are skipped (and the set says so).
    pub secrets_key: Option<SealKey>,
    /// Custom resources recorded and restored along with the built-in kinds.
    pub custom_resources: Vec<CustomResourceKind>,
}

/// The 32-byte key that seals Secrets (`cluster::seal`), never printed.
#[derive(Clone)]
pub struct SealKey(pub(crate) [u8; 32]);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(***)")
    }
}

impl SealKey {
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bad = |why: String| {
            format!("the secrets key must be 32 bytes written as 64 hex characters ({why})")
        };
        let bytes = hex::decode(text.trim()).map_err(|e| bad(e.to_string()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|v: Vec<u8>| bad(format!("got {} bytes", v.len())))?;
        Ok(SealKey(arr))
    }

    /// A new random key (for `wpdr` to suggest, and for tests).
    pub fn generate() -> Self {
        SealKey(rand::random())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

pub(crate) fn resolve(c: &RawCluster, env: &dyn Env) -> Result<ClusterConfig, ConfigError> {
    let s = Section::new(env, "cluster", "WPDR_");
    let namespace = s.key("namespace", "NAMESPACE").string(&c.namespace)?;
    let key_key = s.key("secrets_key_file", "SECRETS_KEY");
    let secrets_key = match key_key.credential(&c.secrets_key_file)? {
        Some(k) => Some(SealKey::from_hex(k.expose()).map_err(|e| key_key.invalid(e))?),
        None => None,
    };
    for cr in &c.custom_resources {
        if [&cr.group, &cr.version, &cr.kind, &cr.plural]
            .iter()
            .any(|f| f.is_empty())
        {
            return Err(invalid(
                "cluster.custom_resources",
                "-",
                "each entry needs group, version, kind and plural",
            ));
        }
    }
    Ok(ClusterConfig {
        namespace,
        secrets_key,
        custom_resources: c.custom_resources.clone(),
    })
}
