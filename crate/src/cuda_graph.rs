//! CUDA graphs: a fixed-shape piece of GPU work recorded once and replayed with one launch.
//!
//! A small score network's training step or sampler step is a few hundred kernels of a few
//! microseconds each; launched one by one from the host, the launches cost more than the
//! arithmetic. Captured into a CUDA graph (NVIDIA's stream capture, through libtorch's
//! `at::cuda::CUDAGraph`, what `torch.cuda.CUDAGraph` wraps), the whole step is one launch.
//!
//! The rules are PyTorch's ("CUDA Graphs" in its CUDA semantics notes):
//! - capture and replay run on a side stream ([`SideStream`]), after a few eager warm-up steps
//!   on that stream (they create cuDNN and cuBLAS handles and workspaces, which capture cannot);
//! - a captured step reads its input from, and writes its output to, the same tensors at every
//!   replay: copy new input into them before [`CudaGraph::replay`];
//! - nothing inside a capture may wait for the GPU or read a value back to the host;
//! - random draws are fine: each replay advances the CUDA generator by what the captured kernels
//!   draw, so replays draw new noise, and reseeding before a replay gives that seed's noise.
//!
//! The graph code lives in `csrc/cuda_graph.cpp`, built by `build.rs` into a shared library of
//! its own that this crate embeds and loads on first use, once libtorch's CUDA backend is loaded
//! ([`crate::device`](fn@crate::device)): binaries carry no link-time dependency on CUDA and start on machines
//! without one. [`crate::training::TrainConfig::cuda_graph`] and
//! [`crate::langevin::AnnealedConfig::cuda_graph`] use it; on the CPU they are ignored.

use crate::error::{Error, Result};
use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;
use tch::Device;

/// The library built from `csrc/cuda_graph.cpp` (empty when this libtorch has no CUDA).
const LIBRARY: &[u8] = include_bytes!(env!("SGM_CUDA_GRAPH_SO"));

type Answer = *mut c_char;

/// The entry points of `csrc/cuda_graph.cpp`.
struct Api {
    stream_enter: unsafe extern "C" fn(c_int, *mut *mut c_void) -> Answer,
    stream_exit: unsafe extern "C" fn(*mut c_void) -> Answer,
    graph_new: unsafe extern "C" fn(*mut *mut c_void) -> Answer,
    graph_free: unsafe extern "C" fn(*mut c_void),
    capture_begin: unsafe extern "C" fn(*mut c_void, c_int) -> Answer,
    capture_end: unsafe extern "C" fn(*mut c_void, c_int) -> Answer,
    replay: unsafe extern "C" fn(*mut c_void, c_int) -> Answer,
}

fn error(why: impl Into<String>) -> Error {
    Error::CudaGraph { why: why.into() }
}

/// Turns the C++ side's answer into a result naming `what`.
fn checked(what: &str, answer: Answer) -> Result<()> {
    match crate::fused::take_message(answer) {
        None => Ok(()),
        Some(first) => Err(error(format!("{what}: {first}"))),
    }
}

/// Loads the graph library (once per process): written into a directory of this process's own
/// under the system's temporary folder (created anew, so no other process's file is ever
/// opened), opened, then removed (the mapping stays).
fn api() -> Result<&'static Api> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| {
        if LIBRARY.is_empty() {
            return Err("this build of sgm has none: its libtorch had no CUDA headers".into());
        }
        match crate::device::load_cuda_backend() {
            crate::device::CudaBackend::Loaded(_) => {}
            other => return Err(format!("libtorch's CUDA backend is not loaded ({other:?})")),
        }
        let dir = std::env::temp_dir().join(format!(
            "sgm-cuda-graph-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        // `create_dir` fails if the name exists: the directory is this process's.
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("libsgm_cuda_graph.so");
        let written = std::fs::write(&path, LIBRARY);
        let cleanup = || {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir(&dir);
        };
        if let Err(e) = written {
            cleanup();
            return Err(format!("cannot write {}: {e}", path.display()));
        }
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        // SAFETY: the library's initialisers only set up C++ statics; it links the libtorch
        // and CUDA runtime already loaded in this process.
        let lib = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_LOCAL) };
        cleanup();
        let lib = lib.map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        macro_rules! get {
            ($name:literal) => {
                // SAFETY: the symbol has the type of the field it fills (csrc/cuda_graph.cpp).
                *unsafe { lib.get($name) }.map_err(|e| format!("{e}"))?
            };
        }
        let api = Api {
            stream_enter: get!(b"sgm_side_stream_enter"),
            stream_exit: get!(b"sgm_side_stream_exit"),
            graph_new: get!(b"sgm_graph_new"),
            graph_free: get!(b"sgm_graph_free"),
            capture_begin: get!(b"sgm_graph_capture_begin"),
            capture_end: get!(b"sgm_graph_capture_end"),
            replay: get!(b"sgm_graph_replay"),
        };
        // Never unloaded: graphs and streams point into it.
        std::mem::forget(lib);
        Ok(api)
    })
    .as_ref()
    .map_err(|why| error(why.clone()))
}

fn cuda_index(device: Device) -> Result<c_int> {
    match device {
        Device::Cuda(i) => Ok(i as c_int),
        other => Err(error(format!(
            "needs a CUDA device, got {}",
            crate::device::name(other)
        ))),
    }
}

/// A side stream of libtorch's pool, the calling thread's current CUDA stream while this
/// guard lives: it starts after the work already queued on the previous stream, and dropping
/// the guard makes that stream wait for the side stream's work and current again.
pub struct SideStream {
    raw: *mut c_void,
}

impl SideStream {
    /// Makes a side stream of `device` current. An error off CUDA.
    pub fn enter(device: Device) -> Result<SideStream> {
        let index = cuda_index(device)?;
        let api = api()?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `raw` receives a new handle on success.
        checked("side stream", unsafe {
            (api.stream_enter)(index, &mut raw)
        })?;
        Ok(SideStream { raw })
    }
}

impl Drop for SideStream {
    fn drop(&mut self) {
        if let Ok(api) = api() {
            // SAFETY: `raw` came from `stream_enter` and is freed by this call. A failure here
            // (a broken CUDA context) has nowhere to go but the next CUDA call, which reports it.
            let _ = checked("side stream exit", unsafe { (api.stream_exit)(self.raw) });
        }
    }
}

/// A captured CUDA graph ([module docs](self)). The tensors its capture created stay valid,
/// and are written by every replay, for as long as the caller keeps them.
pub struct CudaGraph {
    raw: *mut c_void,
    api: &'static Api,
    device: c_int,
}

impl CudaGraph {
    /// Records the GPU work of `f` on `device`: `f` runs once, on the host, while its kernels
    /// are recorded, not run (so its results hold nothing yet: [`CudaGraph::replay`] computes
    /// them). Call it inside a [`SideStream`] that has run `f`'s work eagerly a few times.
    /// An error off CUDA, where this build has no graph library, or where `f` (or libtorch)
    /// fails during the capture.
    pub fn capture<T>(device: Device, f: impl FnOnce() -> Result<T>) -> Result<(CudaGraph, T)> {
        let index = cuda_index(device)?;
        let api = api()?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `raw` receives a new graph on success.
        checked("new graph", unsafe { (api.graph_new)(&mut raw) })?;
        let graph = CudaGraph {
            raw,
            api,
            device: index,
        };
        // SAFETY: `raw` is a live graph for every call below.
        checked("capture begin", unsafe {
            (api.capture_begin)(graph.raw, index)
        })?;
        // The capture ends whatever `f` does, a panic included (libtorch's panicking calls),
        // so that the stream never stays in capture mode.
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let end = checked("capture end", unsafe {
            (api.capture_end)(graph.raw, index)
        });
        let out = match out {
            Ok(out) => out.map_err(|e| error(format!("the captured work failed: {e}")))?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        end?;
        Ok((graph, out))
    }

    /// Launches the recorded work on the current stream (one launch; no wait for it).
    pub fn replay(&self) -> Result<()> {
        // SAFETY: `raw` is a live graph.
        checked("replay", unsafe {
            (self.api.replay)(self.raw, self.device)
        })
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `graph_new` and is freed once, here.
        unsafe { (self.api.graph_free)(self.raw) };
    }
}
