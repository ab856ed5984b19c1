//! Any text as a feed name, item id and pattern: the documented rules decide
//! (1-256 bytes, no NUL; names and non-`*` pattern segments without glob characters).
#![no_main]

use libfuzzer_sys::fuzz_target;
use thoonk_protocol::{FeedName, FeedPattern, ItemId};

fn glob_free(s: &str) -> bool {
    !s.contains(['*', '?', '[', ']', '\\'])
}

fuzz_target!(|s: &str| {
    let sized = !s.is_empty() && s.len() <= 256 && !s.contains('\0');
    assert_eq!(FeedName::new(s).is_ok(), sized && glob_free(s), "{s:?}");
    assert_eq!(ItemId::new(s).is_ok(), sized, "{s:?}");
    let pattern = sized && s.split(':').all(|seg| seg == "*" || glob_free(seg));
    assert_eq!(FeedPattern::new(s).is_ok(), pattern, "{s:?}");
});
