//! Restore plans: the graph of steps a full-site restore runs, read from a
//! YAML file in `restore/` (full, db-only, media-only, drill). Each step has a
//! kind (what it does), the steps it waits for, and a timeout. Loading
//! checks the graph (unique ids, known dependencies, no cycle) so a broken
//! plan fails before anything is touched; `stages` groups the steps that can
//! run in parallel.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a step does. The executor maps each kind to one component's restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// The namespace and its objects, images pinned to the recorded digests.
    ClusterObjects,
    /// Wait until the restored database server accepts connections.
    WaitDatabase,
    /// Load the set's database and compare every table with the manifest.
    DatabaseLoad,
    /// Fill a fresh bucket with the set's media and verify it.
    MediaRestore,
    /// Rewrite the site URL in the database (only with --site-url).
    UrlRewrite,
    /// Start the object cache cold: no key from before the restore is served.
    CacheFlush,
    /// Wait until the application's rollouts are ready on the pinned digests.
    WaitApplication,
    /// Row counts, checksums, media, and the site's answers.
    Checks,
}

impl StepKind {
    /// A bound for a step whose plan gives none.
    pub fn default_timeout_seconds(self) -> u64 {
        match self {
            StepKind::ClusterObjects | StepKind::CacheFlush | StepKind::UrlRewrite => 300,
            StepKind::WaitDatabase | StepKind::WaitApplication | StepKind::Checks => 600,
            StepKind::DatabaseLoad | StepKind::MediaRestore => 4 * 3600,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: String,
    #[serde(default)]
    description: String,
    steps: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: String,
    kind: StepKind,
    #[serde(default)]
    after: Vec<String>,
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    pub kind: StepKind,
    pub after: Vec<String>,
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    /// In the file's order.
    pub steps: Vec<Step>,
}

#[derive(Debug, thiserror::Error)]
#[error("restore plan {file}: {problem}")]
pub struct PlanError {
    pub file: PathBuf,
    pub problem: String,
}

impl crate::exit::Classify for PlanError {
    fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Config
    }
    fn metric_label(&self) -> &'static str {
        "restore_plan"
    }
}

impl Plan {
    pub fn load(path: &Path) -> Result<Plan, PlanError> {
        let fail = |problem: String| PlanError {
            file: path.to_path_buf(),
            problem,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, file: &Path) -> Result<Plan, PlanError> {
        let fail = |problem: String| PlanError {
            file: file.to_path_buf(),
            problem,
        };
        let raw: RawPlan = serde_yaml::from_str(text)
            .map_err(|e| fail(format!("not a valid plan: {e} (unknown keys are refused)")))?;
        if raw.steps.is_empty() {
            return Err(fail("has no steps".into()));
        }
        let mut seen = BTreeSet::new();
        for s in &raw.steps {
            if s.id.is_empty() || !s.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(fail(format!(
                    "step id '{}' must be letters, digits and '-'",
                    s.id
                )));
            }
            if !seen.insert(s.id.clone()) {
                return Err(fail(format!("step id '{}' appears twice", s.id)));
            }
        }
        let mut steps = Vec::new();
        for s in raw.steps {
            for d in &s.after {
                if !seen.contains(d) {
                    return Err(fail(format!(
                        "step '{}' waits for '{d}', which is not a step of this plan",
                        s.id
                    )));
                }
                if d == &s.id {
                    return Err(fail(format!("step '{}' waits for itself", s.id)));
                }
            }
            let timeout_seconds = s
                .timeout_seconds
                .unwrap_or_else(|| s.kind.default_timeout_seconds());
            if !(1..=7 * 86_400).contains(&timeout_seconds) {
                return Err(fail(format!(
                    "step '{}': timeout_seconds {timeout_seconds} is outside 1..604800",
                    s.id
                )));
            }
            steps.push(Step {
                id: s.id,
                kind: s.kind,
                after: s.after,
                timeout_seconds,
            });
        }
        let plan = Plan {
            name: raw.name,
            description: raw.description,
            file: file.to_path_buf(),
            steps,
        };
        plan.stages().map_err(fail)?;
        Ok(plan)
    }

    /// Steps grouped so that every step comes after all it waits for; the
    /// steps of one stage are independent and may run in parallel. A cycle
    /// is an error naming the steps on it.
    pub fn stages(&self) -> Result<Vec<Vec<&Step>>, String> {
        let mut waiting: BTreeMap<&str, BTreeSet<&str>> = self
            .steps
            .iter()
            .map(|s| (s.id.as_str(), s.after.iter().map(String::as_str).collect()))
            .collect();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut stages = Vec::new();
        while !waiting.is_empty() {
            let ready: Vec<&str> = waiting
                .iter()
                .filter(|(_, deps)| deps.iter().all(|d| done.contains(d)))
                .map(|(id, _)| *id)
                .collect();
            if ready.is_empty() {
                let stuck: Vec<&str> = waiting.keys().copied().collect();
                return Err(format!(
                    "the steps {} wait for each other in a cycle",
                    stuck.join(", ")
                ));
            }
            let mut stage = Vec::new();
            for id in ready {
                waiting.remove(id);
                done.insert(id);
                if let Some(s) = self.steps.iter().find(|s| s.id == id) {
                    stage.push(s);
                }
            }
            // Keep the file's order inside a stage: it is how people read plans.
            stage.sort_by_key(|s| self.steps.iter().position(|x| x.id == s.id));
            stages.push(stage);
        }
        Ok(stages)
    }

    pub fn has(&self, kind: StepKind) -> bool {
        self.steps.iter().any(|s| s.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shipped() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("restore");
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_shipped_plans_load() {
        let plans: Vec<Plan> = shipped().iter().map(|p| Plan::load(p).unwrap()).collect();
        let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        for want in ["full", "db-only", "media-only", "drill"] {
            assert!(names.contains(&want), "{names:?}");
        }
        let full = plans.iter().find(|p| p.name == "full").unwrap();
        let stages = full.stages().unwrap();
        // The database and the media load in parallel once the namespace is there.
        let stage_of = |id: &str| {
            stages
                .iter()
                .position(|s| s.iter().any(|x| x.id == id))
                .unwrap()
        };
        assert_eq!(stage_of("namespace"), 0);
        assert!(stage_of("checks") == stages.len() - 1);
        assert!(stage_of("media") < stage_of("application"));
        assert!(stage_of("database") < stage_of("url-rewrite"));
    }

    #[test]
    fn broken_plans_are_refused_with_the_step_named() {
        let p = Path::new("x.yaml");
        let cases = [
            ("name: x\nsteps: []\n", "no steps"),
            ("name: x\nsteps:\n- {id: a, kind: checks, after: [b]}\n", "'b'"),
            ("name: x\nsteps:\n- {id: a, kind: checks}\n- {id: a, kind: checks}\n", "twice"),
            (
                "name: x\nsteps:\n- {id: a, kind: checks, after: [b]}\n- {id: b, kind: checks, after: [a]}\n",
                "cycle",
            ),
            ("name: x\nsteps:\n- {id: a, kind: teleport}\n", "teleport"),
            ("name: x\nsteps:\n- {id: a, kind: checks, timeout_seconds: 0}\n", "timeout"),
        ];
        for (text, want) in cases {
            let err = Plan::parse(text, p).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains("x.yaml"), "{err}");
        }
    }

    proptest! {
        /// Any acyclic graph: every step appears once, after all it waits for.
        #[test]
        fn stages_respect_every_dependency(
            n in 1usize..12,
            edges in proptest::collection::vec((0usize..12, 0usize..12), 0..30),
        ) {
            let mut text = String::from("name: p\nsteps:\n");
            for i in 0..n {
                // Only edges from a higher to a lower index: acyclic by construction.
                let after: BTreeSet<String> = edges
                    .iter()
                    .filter(|(a, b)| *a == i && *b < i)
                    .map(|(_, b)| format!("s{b}"))
                    .collect();
                let after: Vec<String> = after.into_iter().collect();
                text.push_str(&format!("- {{id: s{i}, kind: checks, after: [{}]}}\n", after.join(", ")));
            }
            let plan = Plan::parse(&text, Path::new("p.yaml")).unwrap();
            let stages = plan.stages().unwrap();
            let mut position = BTreeMap::new();
            for (k, stage) in stages.iter().enumerate() {
                for s in stage {
                    prop_assert!(position.insert(s.id.clone(), k).is_none());
                }
            }
            prop_assert_eq!(position.len(), n);
            for s in &plan.steps {
                for d in &s.after {
                    prop_assert!(position[d] < position[&s.id]);
                }
            }
        }
    }
}
