//! Helpers shared by the integration tests.

use std::sync::{Mutex, MutexGuard};

/// libtorch has one global random generator per process and the test harness runs tests on
/// several threads: a test that seeds it and expects reproducible draws holds this lock.
pub fn rng_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh, empty folder `$TMPDIR/sgm-<name>-<pid>` for a test's files.
pub fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sgm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Builds the `sgm` binary (package `sgm-cli`) once and returns its path.
pub fn sgm_bin() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "sgm-cli", "--bin", "sgm"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building sgm failed");
        // target/<profile>/deps/<test>-<hash> → target/<profile>/sgm
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("sgm")
    })
}
