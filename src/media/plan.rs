//! The mirror's decisions, apart from any I/O: given the source listing, the
//! offsite listing and what the previous run recorded, which objects to copy,
//! which offsite versions to keep aside first, and which to delete.
//!
//! All three inputs are sorted by key and merged in one pass, so memory stays
//! flat for millions of keys and a no-change run needs nothing but the two
//! listings. Change detection uses the source ETag recorded at the last copy,
//! because an offsite copy's own ETag differs from the source's whenever the
//! two sides used different multipart part sizes.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// One object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub etag: String,
}

/// What the last run recorded for an offsite object: the source version it
/// copied and the offsite ETag that copy got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub key: String,
    pub source_etag: String,
    pub source_size: u64,
    pub offsite_etag: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Copy the source object offsite (new, or changed since the last copy).
    Copy {
        key: String,
        size: u64,
        changed: bool,
    },
    /// Keep the current offsite version under the retained prefix before it is
    /// overwritten or deleted: no mistake at the source reaches the only other copy.
    Retain { key: String, etag: String },
    /// Remove the offsite object (its source is gone; it was retained first).
    Delete { key: String },
}

/// Counts and actions of one planned run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub unchanged: u64,
    pub copies: u64,
    pub bytes_to_copy: u64,
    pub deletes: u64,
    pub source_objects: u64,
    pub offsite_objects: u64,
}

/// Merges three sorted streams. `recorded` may lack keys (objects copied by
/// something else, or a lost state file): those are compared by size alone
/// and re-copied when the offsite ETag cannot be trusted to match.
pub fn plan(
    source: impl IntoIterator<Item = Listed>,
    offsite: impl IntoIterator<Item = Listed>,
    recorded: impl IntoIterator<Item = Recorded>,
) -> Plan {
    let mut source = source.into_iter().peekable();
    let mut offsite = offsite.into_iter().peekable();
    let mut recorded = recorded.into_iter().peekable();
    let mut p = Plan::default();
    loop {
        let order = match (source.peek(), offsite.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(s), Some(o)) => s.key.as_bytes().cmp(o.key.as_bytes()),
        };
        let key = match order {
            Ordering::Greater => offsite.peek().map(|o| o.key.clone()),
            _ => source.peek().map(|s| s.key.clone()),
        }
        .unwrap_or_default();
        // Advance the record stream to this key.
        while recorded
            .peek()
            .is_some_and(|r| r.key.as_bytes() < key.as_bytes())
        {
            recorded.next();
        }
        let rec = recorded.next_if(|r| r.key == key);
        match order {
            Ordering::Less => {
                let Some(s) = source.next() else { break };
                p.source_objects += 1;
                p.copies += 1;
                p.bytes_to_copy += s.size;
                p.actions.push(Action::Copy {
                    key: s.key,
                    size: s.size,
                    changed: false,
                });
            }
            Ordering::Greater => {
                let Some(o) = offsite.next() else { break };
                p.offsite_objects += 1;
                p.deletes += 1;
                p.actions.push(Action::Retain {
                    key: o.key.clone(),
                    etag: o.etag,
                });
                p.actions.push(Action::Delete { key: o.key });
            }
            Ordering::Equal => {
                let (Some(s), Some(o)) = (source.next(), offsite.next()) else {
                    break;
                };
                p.source_objects += 1;
                p.offsite_objects += 1;
                let same = match &rec {
                    // The offsite object is the copy we made of this very source version.
                    Some(r) => {
                        r.source_etag == s.etag
                            && r.source_size == s.size
                            && r.offsite_etag == o.etag
                    }
                    // No record: equal ETags and sizes mean equal content for plain uploads.
                    None => s.etag == o.etag && s.size == o.size,
                };
                if same {
                    p.unchanged += 1;
                } else {
                    p.copies += 1;
                    p.bytes_to_copy += s.size;
                    p.actions.push(Action::Retain {
                        key: o.key,
                        etag: o.etag,
                    });
                    p.actions.push(Action::Copy {
                        key: s.key,
                        size: s.size,
                        changed: true,
                    });
                }
            }
        }
    }
    p
}

/// Why a run must not delete what it planned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The source listed nothing while the offsite copy holds objects: a wrong
    /// bucket, a wiped MinIO or a broken listing must never empty the mirror.
    EmptySource { offsite_objects: u64 },
    /// More deletions than the configured limit.
    TooManyDeletes { deletes: u64, limit: u64 },
    /// A larger share of the mirror than the configured limit.
    TooLargeShare {
        deletes: u64,
        of: u64,
        max_percent: u8,
    },
}

impl Plan {
    /// Checks the safety rails; `confirmed` lifts the count and share limits,
    /// never the empty-source rule.
    pub fn check(&self, max_deletes: u64, max_percent: u8, confirmed: bool) -> Result<(), Refusal> {
        if self.source_objects == 0 && self.offsite_objects > 0 {
            return Err(Refusal::EmptySource {
                offsite_objects: self.offsite_objects,
            });
        }
        if confirmed || self.deletes == 0 {
            return Ok(());
        }
        if self.deletes > max_deletes {
            return Err(Refusal::TooManyDeletes {
                deletes: self.deletes,
                limit: max_deletes,
            });
        }
        if self.deletes * 100 > u64::from(max_percent) * self.offsite_objects.max(1) {
            return Err(Refusal::TooLargeShare {
                deletes: self.deletes,
                of: self.offsite_objects,
                max_percent,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn l(key: &str, size: u64, etag: &str) -> Listed {
        Listed {
            key: key.into(),
            size,
            etag: etag.into(),
        }
    }

    #[test]
    fn new_changed_deleted_and_unchanged() {
        let source = vec![
            l("a.jpg", 1, "e1"),
            l("b.jpg", 2, "e2-new"),
            l("d.jpg", 4, "e4"),
        ];
        let offsite = vec![
            l("b.jpg", 2, "e2"),
            l("c.jpg", 3, "e3"),
            l("d.jpg", 4, "x-4"),
        ];
        let recorded = vec![Recorded {
            key: "d.jpg".into(),
            source_etag: "e4".into(),
            source_size: 4,
            offsite_etag: "x-4".into(),
        }];
        let p = plan(source, offsite, recorded);
        assert_eq!(
            p.actions,
            vec![
                Action::Copy {
                    key: "a.jpg".into(),
                    size: 1,
                    changed: false
                },
                Action::Retain {
                    key: "b.jpg".into(),
                    etag: "e2".into()
                },
                Action::Copy {
                    key: "b.jpg".into(),
                    size: 2,
                    changed: true
                },
                Action::Retain {
                    key: "c.jpg".into(),
                    etag: "e3".into()
                },
                Action::Delete {
                    key: "c.jpg".into()
                },
            ]
        );
        // d.jpg: offsite ETag differs (multipart) but the record proves it is the same version.
        assert_eq!(p.unchanged, 1);
        assert_eq!((p.copies, p.deletes, p.bytes_to_copy), (2, 1, 3));
    }

    #[test]
    fn safety_rails() {
        let empty = plan(vec![], vec![l("a", 1, "e")], vec![]);
        assert_eq!(
            empty.check(1000, 100, true),
            Err(Refusal::EmptySource { offsite_objects: 1 })
        );
        let src: Vec<Listed> = (0..10).map(|i| l(&format!("k{i}"), 1, "e")).collect();
        let off: Vec<Listed> = (0..20).map(|i| l(&format!("k{i:02}"), 1, "e")).collect();
        let p = plan(src, off, vec![]);
        assert!(matches!(
            p.check(5, 100, false),
            Err(Refusal::TooManyDeletes { .. })
        ));
        assert!(matches!(
            p.check(1000, 10, false),
            Err(Refusal::TooLargeShare { .. })
        ));
        assert_eq!(p.check(5, 10, true), Ok(()));
    }

    proptest! {
        /// Whatever the listings, applying the plan makes the offsite side equal
        /// to the source, every overwritten or deleted offsite version is
        /// retained first, and unchanged objects are never touched.
        #[test]
        fn applying_the_plan_mirrors_the_source_and_loses_nothing(
            src in proptest::collection::btree_map("[a-e]{1,3}", (0u64..5, 0u8..3), 0..30),
            off in proptest::collection::btree_map("[a-e]{1,3}", (0u64..5, 0u8..3), 0..30),
        ) {
            let to_list = |m: &BTreeMap<String, (u64, u8)>| -> Vec<Listed> {
                m.iter().map(|(k, (s, e))| l(k, *s, &format!("e{e}"))).collect()
            };
            let p = plan(to_list(&src), to_list(&off), vec![]);
            let mut mirror: BTreeMap<String, (u64, String)> =
                off.iter().map(|(k, (s, e))| (k.clone(), (*s, format!("e{e}")))).collect();
            let mut retained: Vec<(String, String)> = Vec::new();
            for a in &p.actions {
                match a {
                    Action::Retain { key, etag } => {
                        prop_assert_eq!(mirror.get(key).map(|v| &v.1), Some(etag));
                        retained.push((key.clone(), etag.clone()));
                    }
                    Action::Copy { key, .. } => {
                        if let Some(old) = mirror.get(key) {
                            prop_assert!(retained.contains(&(key.clone(), old.1.clone())), "overwrite without retain");
                        }
                        let (s, e) = src[key];
                        mirror.insert(key.clone(), (s, format!("e{e}")));
                    }
                    Action::Delete { key } => {
                        let old = mirror.remove(key).unwrap();
                        prop_assert!(retained.contains(&(key.clone(), old.1)), "delete without retain");
                    }
                }
            }
            let want: BTreeMap<String, (u64, String)> =
                src.iter().map(|(k, (s, e))| (k.clone(), (*s, format!("e{e}")))).collect();
            prop_assert_eq!(&mirror, &want);
            // Unchanged objects produce no action at all.
            let same = src.iter().filter(|(k, v)| off.get(*k) == Some(v)).count() as u64;
            prop_assert_eq!(p.unchanged, same);
        }
    }
}
