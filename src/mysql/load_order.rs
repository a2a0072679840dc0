//! The order a database load runs its work in, kept apart from the I/O so
//! it can be tested on its own.
//!
//! A table's work is its data chunks, then (when its plain secondary indexes
//! were deferred) one index build, then its check (row count and checksum
//! against the manifest). Instead of three phases one after the other over
//! all tables, each table moves on as soon as its own chunks are in: the
//! index build of the largest table runs while the others still load, and a
//! table is checked while its pages are still in the buffer pool. Ready
//! index builds and checks go before further chunks (they unblock nothing
//! else, but finishing tables early keeps the tail short); chunks go largest
//! table first.

use std::collections::VecDeque;

/// One unit of work on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadTask {
    /// Run the statements of one data artifact (`chunk` indexes the caller's list).
    Chunk { table: usize, chunk: usize },
    /// Build the table's deferred secondary indexes.
    Indexes { table: usize },
    /// Re-read the table and compare it with the manifest.
    Check { table: usize },
}

/// What to hand out next, and what each finished task makes ready.
#[derive(Debug)]
pub struct LoadQueue {
    chunks: VecDeque<LoadTask>,
    ready: VecDeque<LoadTask>,
    /// Chunks of each table not finished yet.
    left: Vec<usize>,
    has_indexes: Vec<bool>,
    running: usize,
}

impl LoadQueue {
    /// `chunks`: (table, chunk) in the order they should start;
    /// `has_indexes[t]`: table `t` has a deferred index build. A table with
    /// no chunks is ready for its index build (or check) at once.
    pub fn new(chunks: Vec<(usize, usize)>, has_indexes: Vec<bool>) -> Self {
        let mut left = vec![0; has_indexes.len()];
        for (t, _) in &chunks {
            left[*t] += 1;
        }
        let mut q = LoadQueue {
            chunks: chunks
                .into_iter()
                .map(|(table, chunk)| LoadTask::Chunk { table, chunk })
                .collect(),
            ready: VecDeque::new(),
            left,
            has_indexes,
            running: 0,
        };
        for t in 0..q.left.len() {
            if q.left[t] == 0 {
                q.table_loaded(t);
            }
        }
        q
    }

    fn table_loaded(&mut self, table: usize) {
        self.ready.push_back(if self.has_indexes[table] {
            LoadTask::Indexes { table }
        } else {
            LoadTask::Check { table }
        });
    }

    /// The next task to run, if one is ready now. `None` while `done()` is
    /// false means: wait for a running task to finish.
    pub fn take(&mut self) -> Option<LoadTask> {
        let task = self.ready.pop_front().or_else(|| self.chunks.pop_front())?;
        self.running += 1;
        Some(task)
    }

    /// Records that `task` (handed out by `take`) succeeded.
    pub fn finished(&mut self, task: &LoadTask) {
        self.running = self.running.saturating_sub(1);
        match *task {
            LoadTask::Chunk { table, .. } => {
                self.left[table] = self.left[table].saturating_sub(1);
                if self.left[table] == 0 {
                    self.table_loaded(table);
                }
            }
            LoadTask::Indexes { table } => self.ready.push_back(LoadTask::Check { table }),
            LoadTask::Check { .. } => {}
        }
    }

    /// Nothing left to hand out and nothing running.
    pub fn done(&self) -> bool {
        self.running == 0 && self.ready.is_empty() && self.chunks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the tables, chunk counts, worker count and order in
        /// which running tasks finish: every chunk, index build and check
        /// runs exactly once; a table's index build starts only after all
        /// its chunks finished, its check only after its index build; and
        /// the queue never reports done early or stalls.
        #[test]
        fn every_task_once_and_in_its_table_order(
            tables in proptest::collection::vec((0usize..5, any::<bool>()), 1..8),
            workers in 1usize..4,
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..200),
        ) {
            let mut chunks = Vec::new();
            for (t, (n, _)) in tables.iter().enumerate() {
                for c in 0..*n {
                    chunks.push((t, c));
                }
            }
            // Largest first, as the loader orders them (any order must work).
            chunks.sort_by_key(|(t, _)| std::cmp::Reverse(tables[*t].0));
            let has_indexes: Vec<bool> = tables.iter().map(|(_, i)| *i).collect();
            let mut q = LoadQueue::new(chunks.clone(), has_indexes.clone());
            let mut running: Vec<LoadTask> = Vec::new();
            let mut finished: Vec<LoadTask> = Vec::new();
            let mut picks = picks.into_iter();
            let mut steps = 0;
            while !q.done() {
                steps += 1;
                prop_assert!(steps < 10_000, "the queue stalled");
                while running.len() < workers {
                    match q.take() {
                        Some(task) => {
                            if let LoadTask::Indexes { table } | LoadTask::Check { table } = task {
                                let chunks_done = finished.iter().filter(|f| matches!(f, LoadTask::Chunk { table: t, .. } if *t == table)).count();
                                prop_assert_eq!(chunks_done, tables[table].0, "table {} moved on before its chunks", table);
                            }
                            if let LoadTask::Check { table } = task {
                                prop_assert_eq!(finished.contains(&LoadTask::Indexes { table }), has_indexes[table]);
                            }
                            running.push(task);
                        }
                        None => break,
                    }
                }
                prop_assert!(!running.is_empty(), "not done, yet nothing runs");
                let i = picks.next().map(|p| p.index(running.len())).unwrap_or(0);
                let task = running.remove(i);
                q.finished(&task);
                finished.push(task);
            }
            let mut want: Vec<LoadTask> = chunks.iter().map(|(table, chunk)| LoadTask::Chunk { table: *table, chunk: *chunk }).collect();
            for (t, i) in has_indexes.iter().enumerate() {
                if *i {
                    want.push(LoadTask::Indexes { table: t });
                }
                want.push(LoadTask::Check { table: t });
            }
            let key = |x: &LoadTask| format!("{x:?}");
            let mut got = finished.clone();
            got.sort_by_key(key);
            want.sort_by_key(key);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn ready_work_goes_before_more_chunks() {
        // Table 0: two chunks and indexes; table 1: one chunk.
        let mut q = LoadQueue::new(vec![(0, 0), (0, 1), (1, 0)], vec![true, false]);
        let a = q.take().unwrap();
        let b = q.take().unwrap();
        assert_eq!(
            (a.clone(), b.clone()),
            (
                LoadTask::Chunk { table: 0, chunk: 0 },
                LoadTask::Chunk { table: 0, chunk: 1 }
            )
        );
        q.finished(&a);
        q.finished(&b);
        // Table 0's index build now overlaps table 1's chunk.
        assert_eq!(q.take(), Some(LoadTask::Indexes { table: 0 }));
        assert_eq!(q.take(), Some(LoadTask::Chunk { table: 1, chunk: 0 }));
        assert_eq!(q.take(), None);
        assert!(!q.done());
    }
}
