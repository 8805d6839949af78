//! Running one part of a longer check or benchmark so that its failure, an error or a panic (the engine's
//! ops panic on a device error, see `crate::backend`), is that part's result and the rest still run.

use anyhow::{anyhow, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// `f()`, with a panic turned into an error carrying its message.
///
/// Sound for the callers here: what `f` borrows (a backend, its caches) stays consistent across a panic
/// (locks are taken with poison recovery and no invariant spans two calls), and a device left in an error
/// state makes the following parts fail on their own, which they then report.
pub fn catch<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Err(anyhow!("panicked: {msg}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let e = catch::<()>(|| panic!("launching k: {}", 7)).unwrap_err();
        assert_eq!(e.to_string(), "panicked: launching k: 7");
    }

    #[test]
    fn results_pass_through() {
        assert_eq!(catch(|| Ok(3)).unwrap(), 3);
        assert!(catch::<()>(|| Err(anyhow!("no"))).unwrap_err().to_string() == "no");
    }
}
