//! Restore of a set's media into a fresh bucket.
