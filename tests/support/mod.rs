//! Helpers shared by the integration tests.

use std::sync::{Mutex, MutexGuard};

/// libtorch has one global random generator per process and the test harness runs tests on
/// several threads: a test that seeds it and expects reproducible draws holds this lock.
pub fn rng_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
