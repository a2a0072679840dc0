//! What wpdr knows about WordPress itself: its serialised PHP values (and,
//! with them, safe rewriting of the data WordPress stores).

pub mod answers;
pub mod php;
pub mod rewrite;
pub mod search_replace;
