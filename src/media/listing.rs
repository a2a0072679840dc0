//! A bucket's listing, fetched in parallel and delivered in key order.
//!
//! S3 lists 1,000 keys a request, one request after the other: a bucket of
//! 100,000 uploads is 100 round trips before a mirror knows it has nothing
//! to do. Uploads live in a tree (`wp-content/uploads/2024/05/…`), so the
//! key space is cut at '/' into subtrees (found by delimiter listings, a few
//! levels down), and the subtrees are listed concurrently. They are handed
//! on strictly in key order, which the mirror's merge depends on; subtrees
//! ahead of the one being read wait with at most a few pages each, so
//! memory stays bounded however large the bucket. A bucket whose first page
//! is its whole listing costs that one request, as before, and a server
//! that answers a page quickly is paged through (see `CUT_AFTER`).

use super::plan::Listed;
use super::MediaError;
use crate::store::s3::S3Client;
use std::cmp::Ordering;
use tokio::sync::mpsc;

/// Stop cutting once there are as many subtrees as listers: pieces as
/// large as they can be (a piece of 170 keys costs a round trip as one of
/// 1,000 does; cut to 120 months, 20,000 keys listed no faster than paged).
const PARTITIONS: usize = LISTERS;
/// ... or this many levels below the prefix.
const MAX_DEPTH: usize = 5;
/// Subtrees listed at once (and, during the cut, delimiter listings at once).
const LISTERS: usize = 8;
/// Pages a subtree's lister may hold ahead of the reader.
const PAGES_AHEAD: usize = 2;
/// A first page slower than this (a server across a network) makes the
/// rest of the listing parallel. Against a Garage on the same host a page
/// takes about 20 ms and the parallel listing of 20,000 keys was 2x slower
/// than paging (docs/BENCHMARKS.md, "Media listings").
pub(super) const CUT_AFTER: std::time::Duration = std::time::Duration::from_millis(40);

/// A stretch of the key space, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Objects already listed.
    Objects(Vec<Listed>),
    /// Every key under `prefix` (after `start_after`, if given). `cut`:
    /// still worth cutting (it had one page of entries or fewer at its level).
    Tree {
        prefix: String,
        start_after: Option<String>,
        cut: bool,
    },
}

impl Piece {
    fn tree(prefix: String) -> Piece {
        Piece::Tree {
            prefix,
            start_after: None,
            cut: true,
        }
    }
}

/// Orders one level's objects and subtrees: a key sorting before a subtree's
/// prefix sorts before every key in it, and one after it after all of them
/// (the key does not start with the prefix).
fn by_position(a: &(String, Piece), b: &(String, Piece)) -> Ordering {
    a.0.as_bytes().cmp(b.0.as_bytes())
}

/// Streams every object under `prefix` into `tx` in key order (the caller
/// checks the order and skips what it must).
pub(super) async fn list_ordered(
    s3: &S3Client,
    prefix: &str,
    cut_after: std::time::Duration,
    tx: &mpsc::Sender<Result<Listed, MediaError>>,
) -> Result<(), MediaError> {
    let asked = std::time::Instant::now();
    let first = s3.list_page(prefix, None, None, None).await?;
    let round_trip = asked.elapsed();
    let Some(token) = first.next else {
        for o in first.objects {
            if tx.send(Ok(o)).await.is_err() {
                return Ok(());
            }
        }
        return Ok(());
    };
    let Some(last) = first.objects.last().map(|o| o.key.clone()) else {
        // A truncated page without keys: follow the token plainly.
        return list_tree(s3, prefix, None, Some(token), tx).await;
    };
    for o in first.objects {
        if tx.send(Ok(o)).await.is_err() {
            return Ok(());
        }
    }
    // Near the server, pages come back faster than extra requests pay
    // for: the cut's delimiter listings and smaller pieces are more work
    // for the server than the round trips they save.
    if round_trip < cut_after {
        return list_tree(s3, prefix, None, Some(token), tx).await;
    }
    let pieces = after(cut(s3, prefix).await?, &last);
    deliver(s3, pieces, tx).await
}

/// The pieces that cover only keys after `last` (what the first page did not).
fn after(pieces: Vec<Piece>, last: &str) -> Vec<Piece> {
    pieces
        .into_iter()
        .filter_map(|p| match p {
            Piece::Objects(os) => {
                let os: Vec<Listed> = os
                    .into_iter()
                    .filter(|o| o.key.as_bytes() > last.as_bytes())
                    .collect();
                (!os.is_empty()).then_some(Piece::Objects(os))
            }
            Piece::Tree { prefix, cut, .. } if last.starts_with(&prefix) => Some(Piece::Tree {
                prefix,
                start_after: Some(last.to_string()),
                cut,
            }),
            Piece::Tree { prefix, cut, .. } if prefix.as_bytes() > last.as_bytes() => {
                Some(Piece::Tree {
                    prefix,
                    start_after: None,
                    cut,
                })
            }
            Piece::Tree { .. } => None,
        })
        .collect()
}

/// Cuts the key space under `prefix` into pieces, level by level.
async fn cut(s3: &S3Client, prefix: &str) -> Result<Vec<Piece>, MediaError> {
    use futures::{StreamExt, TryStreamExt};
    let mut pieces = vec![Piece::tree(prefix.to_string())];
    for _ in 0..MAX_DEPTH {
        let cuttable = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Tree { cut: true, .. }))
            .count();
        let trees = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Tree { .. }))
            .count();
        if cuttable == 0 || trees >= PARTITIONS {
            break;
        }
        let levels: Vec<Vec<Piece>> =
            futures::stream::iter(pieces.into_iter().map(|p| async move {
                match p {
                    Piece::Tree {
                        prefix, cut: true, ..
                    } => one_level(s3, &prefix).await,
                    other => Ok(vec![other]),
                }
            }))
            .buffered(LISTERS)
            .try_collect()
            .await?;
        pieces = merge_objects(levels.into_iter().flatten());
    }
    Ok(pieces)
}

/// One level under `prefix`: its objects and subtrees in key order; or,
/// when the level has more than one page of entries, the whole tree, left
/// uncut (listed page by page, as one piece).
async fn one_level(s3: &S3Client, prefix: &str) -> Result<Vec<Piece>, MediaError> {
    let page = s3.list_page(prefix, Some("/"), None, None).await?;
    if page.next.is_some() {
        return Ok(vec![Piece::Tree {
            prefix: prefix.to_string(),
            start_after: None,
            cut: false,
        }]);
    }
    let mut level: Vec<(String, Piece)> = page
        .objects
        .into_iter()
        .map(|o| (o.key.clone(), Piece::Objects(vec![o])))
        .chain(
            page.prefixes
                .into_iter()
                .map(|p| (p.clone(), Piece::tree(p))),
        )
        .collect();
    level.sort_by(by_position);
    Ok(merge_objects(level.into_iter().map(|(_, p)| p)))
}

/// Joins neighbouring object pieces into one.
fn merge_objects(pieces: impl Iterator<Item = Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    for p in pieces {
        match (out.last_mut(), p) {
            (Some(Piece::Objects(a)), Piece::Objects(b)) => a.extend(b),
            (_, p) => out.push(p),
        }
    }
    out
}

/// Lists the pieces concurrently, `LISTERS` ahead of the reader, and
/// forwards them in order.
async fn deliver(
    s3: &S3Client,
    pieces: Vec<Piece>,
    tx: &mpsc::Sender<Result<Listed, MediaError>>,
) -> Result<(), MediaError> {
    type Pages = mpsc::Receiver<Result<Vec<Listed>, MediaError>>;
    let (queue_tx, mut queue_rx) = mpsc::channel::<Pages>(LISTERS);
    let producer_s3 = s3.clone();
    let producer = tokio::spawn(async move {
        let mut listers = Vec::new();
        for piece in pieces {
            let (pages_tx, pages_rx) = mpsc::channel(PAGES_AHEAD);
            match piece {
                Piece::Objects(os) => {
                    let _ = pages_tx.send(Ok(os)).await;
                }
                Piece::Tree {
                    prefix,
                    start_after,
                    ..
                } => {
                    let b = producer_s3.clone();
                    listers.push(tokio::spawn(async move {
                        if let Err(e) = pages_of(&b, &prefix, start_after, &pages_tx).await {
                            let _ = pages_tx.send(Err(e)).await;
                        }
                    }));
                }
            }
            // Waits while LISTERS pieces are ahead of the reader.
            if queue_tx.send(pages_rx).await.is_err() {
                break;
            }
        }
        listers
    });
    let mut result = Ok(());
    'pieces: while let Some(mut pages) = queue_rx.recv().await {
        while let Some(page) = pages.recv().await {
            match page {
                Ok(objects) => {
                    for o in objects {
                        if tx.send(Ok(o)).await.is_err() {
                            break 'pieces;
                        }
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break 'pieces;
                }
            }
        }
    }
    // Stop whatever is still listing ahead (a failure, or a reader gone).
    drop(queue_rx);
    if let Ok(listers) = producer.await {
        for l in listers {
            l.abort();
        }
    }
    result
}

/// Every page under `prefix` (after `start_after`), into `pages`.
async fn pages_of(
    s3: &S3Client,
    prefix: &str,
    start_after: Option<String>,
    pages: &mpsc::Sender<Result<Vec<Listed>, MediaError>>,
) -> Result<(), MediaError> {
    let mut token: Option<String> = None;
    loop {
        let page = s3
            .list_page(prefix, None, start_after.as_deref(), token.take())
            .await?;
        if pages.send(Ok(page.objects)).await.is_err() {
            return Ok(());
        }
        match page.next {
            Some(t) => token = Some(t),
            None => return Ok(()),
        }
    }
}

/// A whole tree page by page, straight into `tx` (no cut).
async fn list_tree(
    s3: &S3Client,
    prefix: &str,
    start_after: Option<String>,
    mut token: Option<String>,
    tx: &mpsc::Sender<Result<Listed, MediaError>>,
) -> Result<(), MediaError> {
    loop {
        let page = s3
            .list_page(prefix, None, start_after.as_deref(), token.take())
            .await?;
        for o in page.objects {
            if tx.send(Ok(o)).await.is_err() {
                return Ok(());
            }
        }
        match page.next {
            Some(t) => token = Some(t),
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(k: &str) -> Listed {
        Listed {
            key: k.into(),
            size: 1,
            etag: String::new(),
            modified: None,
        }
    }

    #[test]
    fn objects_and_subtrees_of_a_level_sort_by_where_their_keys_fall() {
        // 'b.jpg' < 'b/' (.' < '/') < 'b0.jpg' ('/' < '0').
        let mut level = [
            (
                "u/b0.jpg".to_string(),
                Piece::Objects(vec![obj("u/b0.jpg")]),
            ),
            ("u/b/".to_string(), Piece::tree("u/b/".into())),
            ("u/b.jpg".to_string(), Piece::Objects(vec![obj("u/b.jpg")])),
        ];
        level.sort_by(by_position);
        let order: Vec<&str> = level.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(order, ["u/b.jpg", "u/b/", "u/b0.jpg"]);
    }

    #[test]
    fn what_the_first_page_listed_is_not_listed_again() {
        let pieces = vec![
            Piece::Objects(vec![obj("a.jpg"), obj("c.jpg")]),
            Piece::tree("a/".into()),
            Piece::tree("b/".into()),
            Piece::tree("d/".into()),
        ];
        let rest = after(pieces, "b/x.jpg");
        assert_eq!(
            rest,
            vec![
                Piece::Objects(vec![obj("c.jpg")]),
                Piece::Tree {
                    prefix: "b/".into(),
                    start_after: Some("b/x.jpg".into()),
                    cut: true
                },
                Piece::tree("d/".into()),
            ]
        );
    }
}
