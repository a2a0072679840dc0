//! The environment-over-file overlay, written once.
//!
//! Every setting has a YAML path (`backup.chunk_size`) and an environment
//! variable (`WPDR_CHUNK_SIZE`); the environment wins, so a Kubernetes Secret
//! or ConfigMap can override a file baked into an image. A [`Key`] carries both
//! names, so every parse or range error names the setting the way the person
//! wrote it.

use super::ConfigError;
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// Source of environment variables; a map in tests, the process environment otherwise.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// One YAML section and the environment prefix of its settings.
#[derive(Clone, Copy)]
pub(crate) struct Section<'a> {
    env: &'a dyn Env,
    yaml: &'a str,
    env_prefix: &'a str,
}

impl<'a> Section<'a> {
    /// `yaml` is the section's path (`""` at the top, `media.source`), and
    /// `env_prefix` what its variables start with (`WPDR_`, `WPDR_MEDIA_SOURCE_`).
    pub(crate) fn new(env: &'a dyn Env, yaml: &'a str, env_prefix: &'a str) -> Self {
        Section {
            env,
            yaml,
            env_prefix,
        }
    }

    /// The setting `name` of this section, read from `<env_prefix><var>`.
    pub(crate) fn key(&self, name: &str, var: &str) -> Key<'a> {
        Key {
            env: self.env,
            field: if self.yaml.is_empty() {
                name.to_string()
            } else {
                format!("{}.{name}", self.yaml)
            },
            var: format!("{}{var}", self.env_prefix),
        }
    }
}

/// One setting: its YAML path and its environment variable.
pub(crate) struct Key<'a> {
    env: &'a dyn Env,
    pub(crate) field: String,
    pub(crate) var: String,
}

impl Key<'_> {
    pub(crate) fn invalid(&self, problem: impl Into<String>) -> ConfigError {
        invalid(&self.field, &self.var, problem)
    }

    /// The environment's value if set, else the file's, parsed.
    pub(crate) fn read<T: Clone>(
        &self,
        file: &Option<T>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.env.var(&self.var) {
            Some(v) => parse(&v).map(Some).map_err(|p| self.invalid(p)),
            None => Ok(file.clone()),
        }
    }

    pub(crate) fn string(&self, file: &Option<String>) -> Result<Option<String>, ConfigError> {
        self.read(file, |v| Ok(v.to_string()))
    }

    pub(crate) fn number<T: std::str::FromStr + Clone>(
        &self,
        file: &Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        self.read(file, |v| {
            v.trim()
                .parse()
                .map_err(|_| format!("'{v}' is not a valid number"))
        })
    }

    pub(crate) fn boolean(&self, file: &Option<bool>) -> Result<Option<bool>, ConfigError> {
        self.read(file, as_bool)
    }

    pub(crate) fn path(&self, file: &Option<PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
        self.read(file, |v| Ok(PathBuf::from(v)))
    }

    pub(crate) fn size(&self, file: &Option<ByteSize>) -> Result<Option<u64>, ConfigError> {
        Ok(self.read(file, ByteSize::parse)?.map(|s| s.0))
    }

    /// A comma-separated list in the environment, a YAML list in the file.
    pub(crate) fn list(&self, file: &Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
        Ok(self
            .read(file, |v| {
                Ok(v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect())
            })?
            .unwrap_or_default())
    }

    /// `value`, or an error naming the setting when it is outside `range`.
    pub(crate) fn within<T: PartialOrd + Display>(
        &self,
        value: T,
        range: RangeInclusive<T>,
    ) -> Result<T, ConfigError> {
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(format!(
                "{value} is outside {}..{}",
                range.start(),
                range.end()
            )))
        }
    }

    /// `value` when `ok`, else an error naming the setting.
    pub(crate) fn check<T>(
        &self,
        value: T,
        ok: bool,
        problem: impl FnOnce(&T) -> String,
    ) -> Result<T, ConfigError> {
        if ok {
            Ok(value)
        } else {
            Err(self.invalid(problem(&value)))
        }
    }

    /// A credential: this key's variable holds it directly; else the file
    /// named by `<var>_FILE` or by the YAML setting `file` (whose name is
    /// this key's field), a Secret mounted as a file.
    pub(crate) fn credential(&self, file: &Option<PathBuf>) -> Result<Option<Secret>, ConfigError> {
        if let Some(v) = self.env.var(&self.var) {
            return Ok(Some(Secret::new(v)));
        }
        let path_key = Key {
            env: self.env,
            field: self.field.clone(),
            var: format!("{}_FILE", self.var),
        };
        match path_key.path(file)? {
            Some(p) => read_credential(&self.field, &p).map(Some),
            None => Ok(None),
        }
    }
}

pub(crate) fn invalid(field: &str, env: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        env: env.to_string(),
        problem: problem.into(),
    }
}

/// An http(s) URL, as the site's address.
pub fn as_http_url(v: &str) -> Result<String, String> {
    let u = url::Url::parse(v.trim()).map_err(|e| format!("'{v}' is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!(
            "'{v}' must be an http:// or https:// URL with a host"
        ));
    }
    Ok(v.trim().to_string())
}

fn as_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("'{v}' is not true or false")),
    }
}

pub(crate) fn read_credential(field: &str, path: &Path) -> Result<Secret, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| Secret::new(s.trim_end_matches(['\n', '\r'])))
        .map_err(|source| ConfigError::CredentialFile {
            field: field.to_string(),
            path: path.to_path_buf(),
            source,
        })
}

pub(crate) fn normalise_prefix(p: &str) -> String {
    p.trim_matches('/').to_string()
}

/// A byte count written as an integer or with a unit: `67108864`, `64MiB`, `8 MB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("'{text}' is not a size (use e.g. 64MiB)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => return Err(format!("unknown size unit '{other}' in '{text}'")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("'{text}' is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            N(u64),
            S(String),
        }
        match Either::deserialize(d)? {
            Either::N(n) => Ok(ByteSize(n)),
            Either::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// An environment of the given variables (for tests).
#[cfg(test)]
pub(crate) fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        env_of(pairs)
    }

    #[test]
    fn a_key_names_its_yaml_path_and_variable_in_every_error() {
        let e = env(&[("WPDR_DB_PORT", "x")]);
        let s = Section::new(&e, "database", "WPDR_DB_");
        let k = s.key("port", "PORT");
        let err = k.number::<u16>(&Some(3306)).unwrap_err().to_string();
        assert!(
            err.contains("database.port") && err.contains("WPDR_DB_PORT"),
            "{err}"
        );
        let err = k.within(0u16, 1..=10).unwrap_err().to_string();
        assert!(err.contains("0 is outside 1..10"), "{err}");
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let e = env(&[("WPDR_X_A", "env")]);
        let s = Section::new(&e, "x", "WPDR_X_");
        assert_eq!(
            s.key("a", "A").string(&Some("file".into())).unwrap(),
            Some("env".into())
        );
        assert_eq!(
            s.key("b", "B").string(&Some("file".into())).unwrap(),
            Some("file".into())
        );
        assert_eq!(s.key("c", "C").string(&None).unwrap(), None);
        let top = Section::new(&e, "", "WPDR_");
        assert_eq!(top.key("site", "SITE").field, "site");
    }

    #[test]
    fn credentials_come_from_the_variable_its_file_variable_or_the_yaml_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "fromfile\n").unwrap();
        let e = env(&[("WPDR_PW_FILE", p.to_str().unwrap())]);
        let k = Section::new(&e, "db", "WPDR_").key("password_file", "PW");
        assert_eq!(k.credential(&None).unwrap().unwrap().expose(), "fromfile");
        let e = env(&[("WPDR_PW", "direct")]);
        let k = Section::new(&e, "db", "WPDR_").key("password_file", "PW");
        assert_eq!(
            k.credential(&Some(p.clone())).unwrap().unwrap().expose(),
            "direct"
        );
        let e = env(&[]);
        let k = Section::new(&e, "db", "WPDR_").key("password_file", "PW");
        let err = k
            .credential(&Some(PathBuf::from("/nonexistent/pw")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("db.password_file"), "{err}");
    }

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(ByteSize::parse("64MiB").unwrap().0, 64 << 20);
        assert_eq!(ByteSize::parse("1000").unwrap().0, 1000);
        assert!(ByteSize::parse("12 parsecs").is_err());
    }
}
