//! Device selection: the GPU when one is there, the CPU otherwise.
//!
//! Binaries and evcxr cell libraries linked against `tch` do not list `libtorch_cuda.so` among
//! their needed libraries (the linker drops it as unused), so libtorch never registers its CUDA
//! backend and `Device::cuda_if_available()` silently answers "CPU" on a GPU machine. [`device`]
//! first loads `libtorch_cuda.so` with `RTLD_GLOBAL` from the folder the running libtorch was
//! loaded from (its static initialisers register the backend), then asks for CUDA. Use it
//! everywhere instead of `Device::cuda_if_available()`.

use std::path::PathBuf;
use std::sync::OnceLock;
use tch::Device;

/// What [`load_cuda_backend`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaBackend {
    /// `libtorch_cuda.so` is loaded into the process (from this path).
    Loaded(PathBuf),
    /// The libtorch in use has no `libtorch_cuda.so` (a CPU-only build).
    Absent,
    /// It exists but could not be loaded (message from the dynamic loader).
    Failed(String),
}

static BACKEND: OnceLock<CudaBackend> = OnceLock::new();

/// The folder holding the `libtorch_cpu.so` mapped into this process, read from
/// `/proc/self/maps`.
fn libtorch_dir() -> Option<PathBuf> {
    // Make sure libtorch is mapped (any call into it does).
    let _ = tch::utils::has_openmp();
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libtorch_cpu.so"))
        .and_then(|path| PathBuf::from(path).parent().map(PathBuf::from))
}

/// Loads libtorch's CUDA backend once per process (idempotent) and says what happened.
pub fn load_cuda_backend() -> &'static CudaBackend {
    BACKEND.get_or_init(|| {
        let Some(dir) = libtorch_dir() else {
            return CudaBackend::Absent;
        };
        let path = dir.join("libtorch_cuda.so");
        if !path.exists() {
            return CudaBackend::Absent;
        }
        use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
        // SAFETY: loading libtorch_cuda.so runs its static initialisers, which only register
        // the CUDA backend with the libtorch already in this process.
        match unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_GLOBAL) } {
            Ok(lib) => {
                // Never unloaded: libtorch keeps pointers into it.
                std::mem::forget(lib);
                CudaBackend::Loaded(path)
            }
            Err(e) => CudaBackend::Failed(e.to_string()),
        }
    })
}

/// The device to compute on: `Cuda(0)` when a GPU is usable, `Cpu` otherwise.
///
/// Set `SGM_DEVICE=cpu` to force the CPU on a GPU machine.
pub fn device() -> Device {
    if std::env::var("SGM_DEVICE").is_ok_and(|v| v.eq_ignore_ascii_case("cpu")) {
        return Device::Cpu;
    }
    load_cuda_backend();
    Device::cuda_if_available()
}

/// A one-line description of the device in use, for notebooks and reports.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(i) => format!("cuda:{i} ({} GPUs visible)", tch::Cuda::device_count()),
        other => format!("{other:?}"),
    }
}
