//! The mirror's decisions, apart from any I/O: given the source listing, the
//! offsite listing and what the previous run recorded, what to do with each key.
//!
//! All three inputs are sorted by key and merged in one pass, and each key's
//! decision goes straight to a sink, so memory stays flat for millions of
//! keys and a no-change run needs nothing but the two listings. Change
//! detection uses the source ETag recorded at the last copy, because an
//! offsite copy's own ETag differs from the source's whenever the two sides
//! used different multipart part sizes. Any input error stops the merge at
//! once: a listing that ended early must never read as "deleted at the source".

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

pub use crate::store::s3::client::Listed;

/// One mirrored object: the source version and where its copy is. The
/// mirror's state and every set's media index are sorted streams of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub key: String,
    pub size: u64,
    /// The source's ETag for this version: with the key, it names the version.
    pub etag: String,
    /// The offsite copy's ETag when it was written.
    pub offsite_etag: String,
    /// SHA-256 of the content, computed while copying.
    pub sha256: String,
    /// The offsite copy's size when it is not the content's (a sealed copy
    /// is larger by its age header and tags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsite_size: Option<u64>,
    /// When the source version was written (its LastModified, Unix
    /// seconds); absent in records from before wpdr recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<i64>,
}

impl Record {
    /// What the offsite copy's listing shows as its size.
    pub fn stored_size(&self) -> u64 {
        self.offsite_size.unwrap_or(self.size)
    }
}

/// An offsite object about to be overwritten or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    pub key: String,
    pub size: u64,
    pub offsite_etag: String,
    /// The source ETag it was copied from when the state knows it, else its own
    /// ETag: the name it is retained under, so an older set's index finds it.
    pub source_etag: String,
}

/// What happens to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    /// The offsite object is the recorded copy of this very source version.
    Unchanged(Record),
    /// Same size and ETag on both sides but no record (a lost state file, a
    /// killed run, a mirror seeded by another tool), or a multipart offsite
    /// copy no record vouches for: confirm from its metadata, else copy.
    Adopt { source: Listed, offsite: Listed },
    /// Copy the source object; `replaces` is the offsite version retained first.
    Copy {
        source: Listed,
        replaces: Option<Version>,
    },
    /// The source no longer has the key: retain the offsite version, then delete it.
    Delete(Version),
}

/// Counts of one planned run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub source_objects: u64,
    pub offsite_objects: u64,
    pub unchanged: u64,
    pub adopt: u64,
    pub copies: u64,
    pub bytes_to_copy: u64,
    pub deletes: u64,
}

fn version(o: Listed, rec: Option<&Record>) -> Version {
    let source_etag = match rec {
        Some(r) if r.offsite_etag == o.etag => r.etag.clone(),
        _ => o.etag.clone(),
    };
    Version {
        key: o.key,
        size: o.size,
        offsite_etag: o.etag,
        source_etag,
    }
}

/// Merges the three sorted streams and hands each key's [`Step`] to `sink`.
/// `recorded` may lack keys; keys it has that neither side lists are dropped.
pub fn plan<E>(
    source: impl IntoIterator<Item = Result<Listed, E>>,
    offsite: impl IntoIterator<Item = Result<Listed, E>>,
    recorded: impl IntoIterator<Item = Result<Record, E>>,
    mut sink: impl FnMut(Step) -> Result<(), E>,
) -> Result<Totals, E> {
    let mut source = source.into_iter().peekable();
    let mut offsite = offsite.into_iter().peekable();
    let mut recorded = recorded.into_iter().peekable();
    let mut t = Totals::default();
    // Surfaces an input error before the merge reads a short stream as an end.
    fn peek<T: Clone, E>(
        it: &mut std::iter::Peekable<impl Iterator<Item = Result<T, E>>>,
    ) -> Result<Option<T>, E> {
        match it.peek() {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v.clone())),
            Some(Err(_)) => match it.next() {
                Some(Err(e)) => Err(e),
                _ => Ok(None),
            },
        }
    }
    loop {
        let s = peek(&mut source)?;
        let o = peek(&mut offsite)?;
        let (order, key) = match (&s, &o) {
            (None, None) => break,
            (Some(s), None) => (Ordering::Less, s.key.clone()),
            (None, Some(o)) => (Ordering::Greater, o.key.clone()),
            (Some(s), Some(o)) => {
                let ord = s.key.as_bytes().cmp(o.key.as_bytes());
                let key = if ord == Ordering::Greater {
                    &o.key
                } else {
                    &s.key
                };
                (ord, key.clone())
            }
        };
        let mut rec = None;
        while let Some(r) = peek(&mut recorded)? {
            match r.key.as_bytes().cmp(key.as_bytes()) {
                Ordering::Less => {
                    recorded.next();
                }
                Ordering::Equal => {
                    recorded.next();
                    rec = Some(r);
                    break;
                }
                Ordering::Greater => break,
            }
        }
        match (order, s, o) {
            (Ordering::Less, Some(s), _) => {
                source.next();
                t.source_objects += 1;
                t.copies += 1;
                t.bytes_to_copy += s.size;
                sink(Step::Copy {
                    source: s,
                    replaces: None,
                })?;
            }
            (Ordering::Greater, _, Some(o)) => {
                offsite.next();
                t.offsite_objects += 1;
                t.deletes += 1;
                sink(Step::Delete(version(o, rec.as_ref())))?;
            }
            (Ordering::Equal, Some(s), Some(o)) => {
                source.next();
                offsite.next();
                t.source_objects += 1;
                t.offsite_objects += 1;
                match rec {
                    Some(r)
                        if r.etag == s.etag
                            && r.size == s.size
                            && o.size == r.stored_size()
                            && r.offsite_etag == o.etag =>
                    {
                        t.unchanged += 1;
                        let modified = r.modified.or(s.modified);
                        sink(Step::Unchanged(Record { modified, ..r }))?;
                    }
                    // Same content by ETag; or a multipart copy the (missing or
                    // stale) record cannot vouch for, which its own metadata may.
                    ref rec
                        if s.size == o.size
                            && (s.etag == o.etag
                                || (o.etag.contains('-')
                                    && rec.as_ref().is_none_or(|r| r.offsite_etag != o.etag))) =>
                    {
                        t.adopt += 1;
                        sink(Step::Adopt {
                            source: s,
                            offsite: o,
                        })?;
                    }
                    rec => {
                        t.copies += 1;
                        t.bytes_to_copy += s.size;
                        let replaces = Some(version(o, rec.as_ref()));
                        sink(Step::Copy {
                            source: s,
                            replaces,
                        })?;
                    }
                }
            }
            _ => break,
        }
    }
    Ok(t)
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

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::EmptySource { offsite_objects } => write!(
                f,
                "the source bucket listed no objects while the offsite mirror holds {offsite_objects}: nothing is deleted (check media.source; an empty source never empties the mirror)"
            ),
            Refusal::TooManyDeletes { deletes, limit } => write!(
                f,
                "{deletes} offsite objects would be deleted, more than media.max_deletes ({limit}); nothing was deleted. If the source really lost them, rerun with --confirm-deletes"
            ),
            Refusal::TooLargeShare {
                deletes,
                of,
                max_percent,
            } => write!(
                f,
                "{deletes} of {of} offsite objects would be deleted, more than media.max_delete_percent ({max_percent}%); nothing was deleted. If the source really lost them, rerun with --confirm-deletes"
            ),
        }
    }
}

impl Totals {
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
            modified: None,
        }
    }

    fn ok<T>(v: Vec<T>) -> Vec<Result<T, String>> {
        v.into_iter().map(Ok).collect()
    }

    fn run(src: Vec<Listed>, off: Vec<Listed>, rec: Vec<Record>) -> (Vec<Step>, Totals) {
        let mut steps = Vec::new();
        let t = plan(ok(src), ok(off), ok(rec), |s| {
            steps.push(s);
            Ok::<_, String>(())
        })
        .unwrap();
        (steps, t)
    }

    fn rec(key: &str, etag: &str, size: u64, offsite_etag: &str) -> Record {
        Record {
            key: key.into(),
            size,
            etag: etag.into(),
            offsite_etag: offsite_etag.into(),
            sha256: "s".into(),
            offsite_size: None,
            modified: None,
        }
    }

    #[test]
    fn new_changed_deleted_adopted_and_unchanged() {
        let source = vec![
            l("a.jpg", 1, "e1"),
            l("b.jpg", 2, "e2-new"),
            l("d.jpg", 4, "e4"),
            l("e.jpg", 5, "e5"),
        ];
        let offsite = vec![
            l("b.jpg", 2, "x2"),
            l("c.jpg", 3, "x3"),
            l("d.jpg", 4, "x-4"),
            l("e.jpg", 5, "e5"),
        ];
        let recorded = vec![
            rec("b.jpg", "e2", 2, "x2"),
            rec("c.jpg", "e3", 3, "x3"),
            rec("d.jpg", "e4", 4, "x-4"),
        ];
        let (steps, t) = run(source, offsite, recorded);
        assert_eq!(
            steps,
            vec![
                Step::Copy {
                    source: l("a.jpg", 1, "e1"),
                    replaces: None
                },
                // Retained under the source ETag it was copied from.
                Step::Copy {
                    source: l("b.jpg", 2, "e2-new"),
                    replaces: Some(Version {
                        key: "b.jpg".into(),
                        size: 2,
                        offsite_etag: "x2".into(),
                        source_etag: "e2".into()
                    })
                },
                Step::Delete(Version {
                    key: "c.jpg".into(),
                    size: 3,
                    offsite_etag: "x3".into(),
                    source_etag: "e3".into()
                }),
                // The offsite ETag differs (multipart) but the record proves it is the same version.
                Step::Unchanged(rec("d.jpg", "e4", 4, "x-4")),
                Step::Adopt {
                    source: l("e.jpg", 5, "e5"),
                    offsite: l("e.jpg", 5, "e5")
                },
            ]
        );
        assert_eq!((t.copies, t.deletes, t.bytes_to_copy), (2, 1, 3));
        assert_eq!((t.unchanged, t.adopt), (1, 1));
    }

    #[test]
    fn a_sealed_copy_is_unchanged_at_its_own_size_and_a_resized_one_is_copied() {
        let mut sealed = rec("a.jpg", "e1", 100, "o1");
        sealed.offsite_size = Some(300);
        let (steps, t) = run(
            vec![l("a.jpg", 100, "e1"), l("b.jpg", 100, "e2")],
            vec![l("a.jpg", 300, "o1"), l("b.jpg", 100, "o2")],
            vec![sealed.clone(), {
                let mut r = rec("b.jpg", "e2", 100, "o2");
                r.offsite_size = Some(300);
                r
            }],
        );
        assert_eq!(steps[0], Step::Unchanged(sealed));
        // The record says sealed (300 bytes) but the offsite copy is 100: copy.
        assert!(
            matches!(
                &steps[1],
                Step::Copy {
                    replaces: Some(_),
                    ..
                }
            ),
            "{steps:?}"
        );
        assert_eq!((t.unchanged, t.copies), (1, 1));
    }

    #[test]
    fn an_input_error_stops_the_merge_before_anything_reads_as_deleted() {
        let src: Vec<Result<Listed, String>> =
            vec![Ok(l("a", 1, "e")), Err("listing broke".into())];
        let off = ok(vec![l("a", 1, "e"), l("b", 1, "e"), l("c", 1, "e")]);
        let mut steps = Vec::new();
        let r = plan(src, off, ok(vec![]), |s| {
            steps.push(s);
            Ok::<_, String>(())
        });
        assert_eq!(r, Err("listing broke".to_string()));
        assert!(
            steps.iter().all(|s| !matches!(s, Step::Delete(_))),
            "{steps:?}"
        );
    }

    #[test]
    fn safety_rails() {
        let (_, empty) = run(vec![], vec![l("a", 1, "e")], vec![]);
        assert_eq!(
            empty.check(1000, 100, true),
            Err(Refusal::EmptySource { offsite_objects: 1 })
        );
        let src: Vec<Listed> = (0..10).map(|i| l(&format!("k{i}"), 1, "e")).collect();
        let off: Vec<Listed> = (0..20).map(|i| l(&format!("k{i:02}"), 1, "e")).collect();
        let (_, t) = run(src, off, vec![]);
        assert!(matches!(
            t.check(5, 100, false),
            Err(Refusal::TooManyDeletes { .. })
        ));
        assert!(matches!(
            t.check(1000, 10, false),
            Err(Refusal::TooLargeShare { .. })
        ));
        assert_eq!(t.check(5, 10, true), Ok(()));
    }

    /// ETags of the model: "m-2" stands for a multipart upload's.
    fn etag(e: u8) -> String {
        if e == 2 {
            "m-2".into()
        } else {
            format!("e{e}")
        }
    }

    proptest! {
        /// Whatever the listings and records, applying the steps makes the
        /// offsite side equal to the source, every overwritten or deleted
        /// offsite version is retained first, and a recorded, unchanged
        /// object is never touched.
        #[test]
        fn applying_the_plan_mirrors_the_source_and_loses_nothing(
            src in proptest::collection::btree_map("[a-e]{1,3}", (0u64..5, 0u8..3), 0..30),
            off in proptest::collection::btree_map("[a-e]{1,3}", (0u64..5, 0u8..3), 0..30),
            recorded in proptest::collection::btree_map("[a-e]{1,3}", (0u64..5, 0u8..3, 0u8..3), 0..30),
        ) {
            let to_list = |m: &BTreeMap<String, (u64, u8)>| -> Vec<Listed> {
                m.iter().map(|(k, (s, e))| l(k, *s, &etag(*e))).collect()
            };
            let recs: Vec<Record> = recorded.iter().map(|(k, (s, e, o))| rec(k, &etag(*e), *s, &etag(*o))).collect();
            let (steps, t) = run(to_list(&src), to_list(&off), recs);
            let mut mirror: BTreeMap<String, (u64, String)> =
                off.iter().map(|(k, (s, e))| (k.clone(), (*s, etag(*e)))).collect();
            let mut retained: Vec<(String, String)> = Vec::new();
            let mut touched = 0u64;
            for step in &steps {
                match step {
                    Step::Unchanged(r) => {
                        prop_assert_eq!(mirror.get(&r.key).map(|v| &v.1), Some(&r.offsite_etag));
                        // The record proves the offsite object holds this source version.
                        mirror.insert(r.key.clone(), (r.size, r.etag.clone()));
                    }
                    Step::Adopt { source, offsite } => {
                        prop_assert_eq!(mirror.get(&source.key), Some(&(offsite.size, offsite.etag.clone())));
                        prop_assert_eq!(source.size, offsite.size);
                        prop_assert!(source.etag == offsite.etag || offsite.etag.contains('-'));
                        // Unconfirmed multipart copies are re-copied (after a retain) by the executor.
                        mirror.insert(source.key.clone(), (source.size, source.etag.clone()));
                    }
                    Step::Copy { source, replaces } => {
                        touched += 1;
                        match (mirror.get(&source.key), replaces) {
                            (Some(old), Some(v)) => prop_assert_eq!(&old.1, &v.offsite_etag),
                            (Some(_), None) => prop_assert!(false, "overwrite without retain"),
                            (None, Some(_)) => prop_assert!(false, "retain of nothing"),
                            (None, None) => {}
                        }
                        if let Some(v) = replaces {
                            retained.push((v.key.clone(), v.offsite_etag.clone()));
                        }
                        mirror.insert(source.key.clone(), (source.size, source.etag.clone()));
                    }
                    Step::Delete(v) => {
                        touched += 1;
                        let old = mirror.remove(&v.key);
                        prop_assert_eq!(old.map(|o| o.1), Some(v.offsite_etag.clone()));
                    }
                }
            }
            let want: BTreeMap<String, (u64, String)> =
                src.iter().map(|(k, (s, e))| (k.clone(), (*s, etag(*e)))).collect();
            prop_assert_eq!(&mirror, &want);
            prop_assert_eq!(touched, t.copies + t.deletes);
            // Keys are visited once each, in order.
            let keys: Vec<&str> = steps.iter().map(|s| match s {
                Step::Unchanged(r) => r.key.as_str(),
                Step::Adopt { source, .. } | Step::Copy { source, .. } => source.key.as_str(),
                Step::Delete(v) => v.key.as_str(),
            }).collect();
            prop_assert!(keys.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
