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

/// The environment variable naming the device the library tests compute on.
pub const TEST_DEVICE_ENV: &str = "SGM_TEST_DEVICE";

/// The device the library tests compute on: `$SGM_TEST_DEVICE` (`cpu`, `cuda` or `cuda:N`,
/// parsed like `SGM_DEVICE`), the CPU when it is unset, so that CI (no GPU) is unchanged. A GPU
/// asked for and absent stops the test with the reason: never a silent CPU run.
///
/// On a GPU machine, `SGM_TEST_DEVICE=cuda cargo test` runs every statistical, shape and
/// error test there (the tests about device selection itself keep naming devices).
pub fn test_device() -> sgm::tch::Device {
    static DEVICE: std::sync::OnceLock<sgm::tch::Device> = std::sync::OnceLock::new();
    *DEVICE.get_or_init(|| {
        let Some(value) = std::env::var_os(TEST_DEVICE_ENV) else {
            return sgm::tch::Device::Cpu;
        };
        let value = value.to_string_lossy();
        let request = sgm::device::parse_device_request(&value)
            .unwrap_or_else(|e| panic!("{TEST_DEVICE_ENV}: {e}"));
        let (backend, gpus) = match request {
            sgm::device::DeviceRequest::Cpu => (sgm::device::CudaBackend::Absent, 0),
            sgm::device::DeviceRequest::Cuda(_) => (
                sgm::device::load_cuda_backend().clone(),
                usize::try_from(sgm::tch::Cuda::device_count()).unwrap_or(0),
            ),
        };
        sgm::device::choose(Some(request), &backend, gpus)
            .unwrap_or_else(|e| panic!("{TEST_DEVICE_ENV}={value}: {e}"))
            .device
    })
}

/// `Tensor::from_slice` on [`test_device`]: the tests' hand-written constants live where the
/// tensors they meet do.
pub fn from_slice<T: sgm::tch::kind::Element>(values: &[T]) -> sgm::tch::Tensor {
    sgm::tch::Tensor::from_slice(values).to_device(test_device())
}
