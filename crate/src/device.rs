//! Device selection: the GPU when one is there, the CPU otherwise, and why.
//!
//! Binaries and evcxr cell libraries linked against `tch` do not list `libtorch_cuda.so` among
//! their needed libraries (the linker drops it as unused), so libtorch never registers its CUDA
//! backend and `Device::cuda_if_available()` silently answers "CPU" on a GPU machine. This
//! module first loads `libtorch_cuda.so` with `RTLD_GLOBAL` from the folder the running libtorch
//! was loaded from (its static initialisers register the backend), then asks for CUDA. Use it
//! everywhere instead of `Device::cuda_if_available()`.
//!
//! # `SGM_DEVICE`
//!
//! | value (case-insensitive) | device |
//! |---|---|
//! | unset | `cuda:0` when a GPU is usable, else the CPU ([`Reason`] says why) |
//! | `cpu` | the CPU (the CUDA backend is not even loaded) |
//! | `cuda` | `cuda:0`; an error when no GPU is usable |
//! | `cuda:N` | GPU `N`; an error when fewer than `N + 1` are visible |
//!
//! Anything else (including an empty value) is [`Error::InvalidDevice`]. The three entry
//! points: [`device_choice`] (the device and the reason for it), [`try_device`] (the device, or
//! the error), [`device`] (never fails: falls back to the CPU, for notebooks; the reason is in
//! [`device_choice`] and in [`describe`]).

use crate::error::{Error, Result};
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

/// Loads the CUDA backend ([`load_cuda_backend`]) unless `SGM_DEVICE=cpu` forces the CPU.
///
/// ATen decides once per process whether CUDA exists, at the first call that asks for its CUDA
/// hooks, and keeps that answer (ATen's `detail/CUDAHooksInterface.cpp` caches the hooks behind
/// a once-flag). `manual_seed`, which seeds every GPU's generator, is such a call: a process
/// that seeds before loading the backend never sees its GPU. [`crate::data::seed`] calls this
/// first, so seeding before [`device`] is safe; code that calls libtorch directly before
/// [`device`] should call it too. Decided at the first call (the training loop seeds every
/// step).
pub fn prepare() {
    static PREPARED: std::sync::Once = std::sync::Once::new();
    PREPARED.call_once(|| {
        let forced_cpu = std::env::var("SGM_DEVICE")
            .ok()
            .and_then(|v| parse_device_request(&v).ok())
            == Some(DeviceRequest::Cpu);
        if !forced_cpu {
            load_cuda_backend();
        }
    });
}

/// What [`load_cuda_backend`] found, or `None` while nothing has loaded it yet.
pub fn cuda_backend() -> Option<&'static CudaBackend> {
    BACKEND.get()
}

/// A device asked for by name (`SGM_DEVICE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// `cpu`.
    Cpu,
    /// `cuda` (`None`: the first GPU) or `cuda:N`.
    Cuda(Option<usize>),
}

impl std::fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceRequest::Cpu => write!(f, "cpu"),
            DeviceRequest::Cuda(None) => write!(f, "cuda"),
            DeviceRequest::Cuda(Some(i)) => write!(f, "cuda:{i}"),
        }
    }
}

/// Parses a device name: exactly `cpu`, `cuda` or `cuda:N` (N decimal digits), ignoring case.
/// Anything else, an empty string, surrounding spaces, `gpu`, `cuda:`, `cuda:-1` or `cuda:+1`
/// included, is [`Error::InvalidDevice`] naming the value. Pure: it reads no environment and
/// asks no driver.
pub fn parse_device_request(value: &str) -> Result<DeviceRequest> {
    let invalid = || Error::InvalidDevice {
        value: value.to_string(),
    };
    let lower = value.to_ascii_lowercase();
    match lower.as_str() {
        "cpu" => Ok(DeviceRequest::Cpu),
        "cuda" => Ok(DeviceRequest::Cuda(None)),
        other => {
            let index = other.strip_prefix("cuda:").ok_or_else(invalid)?;
            // `usize::from_str` would also take "+1".
            if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            index
                .parse()
                .map(|i| DeviceRequest::Cuda(Some(i)))
                .map_err(|_| invalid())
        }
    }
}

/// Why [`device_choice`] chose its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// CPU: `SGM_DEVICE=cpu`.
    ForcedCpu,
    /// GPU: `SGM_DEVICE=cuda` or `cuda:N`, and that GPU is visible.
    RequestedGpu,
    /// GPU: `SGM_DEVICE` unset and a GPU is visible (the first one is used).
    GpuAvailable,
    /// CPU: the libtorch in use has no `libtorch_cuda.so` (a CPU-only build).
    CudaAbsent,
    /// CPU: `libtorch_cuda.so` exists but the dynamic loader refused it (its message).
    CudaLoadFailed(String),
    /// CPU: libtorch's CUDA backend is loaded, but no CUDA device is visible.
    NoCudaDevice,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::ForcedCpu => write!(f, "forced by SGM_DEVICE=cpu"),
            Reason::RequestedGpu => write!(f, "asked for by SGM_DEVICE"),
            Reason::GpuAvailable => write!(f, "a CUDA device is visible"),
            Reason::CudaAbsent => write!(
                f,
                "the libtorch in use has no libtorch_cuda.so (a CPU-only build)"
            ),
            Reason::CudaLoadFailed(m) => write!(f, "libtorch_cuda.so failed to load: {m}"),
            Reason::NoCudaDevice => write!(
                f,
                "libtorch's CUDA backend is loaded but no CUDA device is visible (no GPU, no \
                 driver, or CUDA_VISIBLE_DEVICES hides them)"
            ),
        }
    }
}

/// A device and the reason it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChoice {
    /// The device to compute on.
    pub device: Device,
    /// Why this one.
    pub reason: Reason,
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", name(self.device), self.reason)
    }
}

/// The choice made from a request (`None`: `SGM_DEVICE` unset), what [`load_cuda_backend`]
/// found and the number of visible GPUs. Pure, so that every case can be tested on any machine.
///
/// No request: `cuda:0` if a GPU is visible, else the CPU with the reason (backend absent,
/// failed to load, or loaded without devices). A GPU request that cannot be met is an error
/// naming that reason, or the number of GPUs when `N` is too large: never a silent CPU.
pub fn choose(
    request: Option<DeviceRequest>,
    backend: &CudaBackend,
    gpus: usize,
) -> Result<DeviceChoice> {
    let no_gpu = || match backend {
        CudaBackend::Absent => Reason::CudaAbsent,
        CudaBackend::Failed(m) => Reason::CudaLoadFailed(m.clone()),
        CudaBackend::Loaded(_) => Reason::NoCudaDevice,
    };
    match request {
        Some(DeviceRequest::Cpu) => Ok(DeviceChoice {
            device: Device::Cpu,
            reason: Reason::ForcedCpu,
        }),
        None if gpus > 0 => Ok(DeviceChoice {
            device: Device::Cuda(0),
            reason: Reason::GpuAvailable,
        }),
        None => Ok(DeviceChoice {
            device: Device::Cpu,
            reason: no_gpu(),
        }),
        Some(r @ DeviceRequest::Cuda(index)) => {
            let i = index.unwrap_or(0);
            if gpus == 0 {
                Err(Error::DeviceUnavailable {
                    requested: r.to_string(),
                    why: no_gpu().to_string(),
                })
            } else if i >= gpus {
                Err(Error::DeviceUnavailable {
                    requested: r.to_string(),
                    why: format!("{gpus} CUDA device(s) visible: cuda:0 to cuda:{}", gpus - 1),
                })
            } else {
                Ok(DeviceChoice {
                    device: Device::Cuda(i),
                    reason: Reason::RequestedGpu,
                })
            }
        }
    }
}

/// The device this process should use and why, from `SGM_DEVICE` (see the [module docs](self))
/// and the machine. Loads the CUDA backend unless the CPU is forced.
pub fn device_choice() -> Result<DeviceChoice> {
    let request = match std::env::var("SGM_DEVICE") {
        Ok(v) => Some(parse_device_request(&v)?),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(v)) => {
            return Err(Error::InvalidDevice {
                value: v.to_string_lossy().into_owned(),
            })
        }
    };
    if request == Some(DeviceRequest::Cpu) {
        // Forced: neither the backend nor the driver is asked (`choose` ignores them).
        return choose(request, &CudaBackend::Absent, 0);
    }
    let backend = load_cuda_backend();
    let gpus = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
    choose(request, backend, gpus)
}

/// The device to compute on, or why `SGM_DEVICE` cannot be honoured ([`device_choice`]
/// without the reason).
pub fn try_device() -> Result<Device> {
    device_choice().map(|c| c.device)
}

/// The device to compute on: `Cuda(0)` when a GPU is usable, `Cpu` otherwise (`SGM_DEVICE`
/// picks another, see the [module docs](self)).
///
/// Never fails, for notebooks: where [`try_device`] errs (a bad `SGM_DEVICE`, a GPU asked for
/// and absent) it prints the error once to stderr and falls back to the CPU. Why the CPU was
/// chosen is in [`device_choice`] and in [`describe`]; programs that must not fall back call
/// [`try_device`].
pub fn device() -> Device {
    match device_choice() {
        Ok(choice) => choice.device,
        Err(e) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| eprintln!("sgm::device: {e}; using the CPU"));
            Device::Cpu
        }
    }
}

/// A device's short name: `cpu`, `cuda:0`, `mps`, `vulkan`.
pub fn name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
    }
}

/// A one-line description of the device in use, for notebooks and reports. For the CPU it adds
/// why no GPU is used when [`device_choice`] picked the CPU too (or its error).
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => {
            let threads = format!("cpu ({} threads)", tch::get_num_threads());
            match device_choice() {
                Ok(c) if c.device == Device::Cpu => format!("{threads}: {}", c.reason),
                Ok(_) => threads,
                Err(e) => format!("{threads}: {e}"),
            }
        }
        Device::Cuda(i) => format!("cuda:{i} ({} GPUs visible)", tch::Cuda::device_count()),
        other => name(other),
    }
}

/// Copies of one fixed host table (noise levels, a mixture's means) on the devices it has been
/// asked for: built on a device's first request, then reused. A table that is read every step
/// is so copied from the host once per device, not once per step (a copy from pageable host
/// memory to a GPU waits for the GPU). The copies are shared: callers must not modify them in
/// place. Cloning starts an empty cache.
#[derive(Default)]
pub struct DeviceCopies(std::sync::Mutex<Vec<(Device, tch::Tensor)>>);

impl DeviceCopies {
    /// The copy on `device`, made with `build` (a host tensor) the first time.
    pub fn get(&self, device: Device, build: impl FnOnce() -> tch::Tensor) -> tch::Tensor {
        let mut copies = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, t)) = copies.iter().find(|(d, _)| *d == device) {
            return t.shallow_clone();
        }
        let t = build().to_device(device);
        copies.push((device, t.shallow_clone()));
        t
    }
}

impl Clone for DeviceCopies {
    fn clone(&self) -> Self {
        DeviceCopies::default()
    }
}

/// Caches compare equal: what they hold follows from the table they belong to.
impl PartialEq for DeviceCopies {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for DeviceCopies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceCopies")
    }
}
