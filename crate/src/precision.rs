//! Arithmetic precision of a training step: float32, bfloat16 autocast, or autocast only where
//! the device has bfloat16 matrix units ([`Precision::Auto`]).
//!
//! Under autocast libtorch runs the operations that gain from it (convolutions, matrix products)
//! in bfloat16 and keeps the rest (sums, norms, the loss) in float32; the weights, their
//! gradients and Adam's moments stay float32 (PyTorch's `torch.autocast(device_type,
//! dtype=torch.bfloat16)`). bfloat16 has float32's exponent range, so unlike float16 it needs no
//! loss scaling. It pays where the hardware has bfloat16 matrix units: GPUs with bfloat16 tensor
//! cores, and CPUs with AMX (this project's 2-core machine trains the MNIST U-Net 1.3 to 1.5
//! times as fast and samples it twice as fast, at the same loss and the same sample quality);
//! elsewhere it is slower: a 2-core Xeon with AVX-512 BF16 but no AMX trains that U-Net at 19.5
//! steps/s under autocast against 27.9 in float32 (means of three interleaved runs each).
//! [`Precision::Auto`] therefore asks libtorch whether the device has the units
//! ([`has_bf16_matrix_units`]) and picks autocast only then.
//! tch's own `autocast` covers CUDA with float16 only, hence the small C++ entries in
//! `csrc/fused.cpp`.
//!
//! Sampling uses it through [`InPrecision`], a score evaluated under autocast whose result comes
//! back in its input's dtype, so the sampler's own arithmetic (the Langevin update, the noise)
//! stays float32; [`crate::samplers::sample`] wraps the score in it with the sampler's
//! [`crate::samplers::Sampler::precision`].

use crate::error::Result;
use crate::score::Score;
use std::ffi::{c_char, c_int};
use std::sync::OnceLock;
use tch::{Device, Tensor};

extern "C" {
    fn sgm_autocast_enter(
        cuda: c_int,
        prev_enabled: *mut c_int,
        prev_dtype: *mut c_int,
    ) -> *mut c_char;
    fn sgm_autocast_exit(cuda: c_int, prev_enabled: c_int, prev_dtype: c_int) -> *mut c_char;
    fn sgm_bf16_matrix_units(cuda: c_int, index: c_int, out: *mut c_int) -> *mut c_char;
    fn sgm_flush_denormal(on: c_int, supported: *mut c_int) -> *mut c_char;
    fn sgm_cuda_conv_tf32(on: c_int) -> *mut c_char;
}

/// Whether cuDNN's float32 convolutions may round their inputs to TF32 (10-bit mantissa,
/// about 5·10⁻⁴ relative; libtorch's default, as `torch.backends.cudnn.allow_tf32`), for the
/// whole process. Float32 matrix products stay IEEE float32 (libtorch's default) either way. The
/// CPU is not affected. The tests turn it off on a GPU, so that their float32 tolerances
/// hold there; training and sampling keep libtorch's default.
pub fn set_cuda_conv_tf32(on: bool) -> Result<()> {
    // SAFETY: the call takes a plain int and returns null or a malloc'ed message.
    crate::fused::checked("setFloat32Precision(cuda, conv)", unsafe {
        sgm_cuda_conv_tf32(c_int::from(on))
    })
}

/// The precision a training step computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Precision {
    /// Everything in float32.
    #[default]
    Float32,
    /// bfloat16 autocast for the forward pass and the loss (the backward pass follows it).
    Bf16Autocast,
    /// [`Precision::Bf16Autocast`] where the device has bfloat16 matrix units, float32
    /// elsewhere ([`Precision::resolve`]). Results differ between such devices by bfloat16's
    /// rounding, as they already differ between a CPU and a GPU.
    Auto,
}

/// Whether `device` has bfloat16 matrix units, as libtorch sees them: on the CPU, AMX-BF16
/// (Intel Sapphire Rapids and later) that the kernel lets this process use; on CUDA, the
/// GPU's compute capability is 8.0 or above (Ampere and later). Other devices: no.
/// The CPU's answer is asked once per process.
pub fn has_bf16_matrix_units(device: Device) -> Result<bool> {
    static CPU: OnceLock<bool> = OnceLock::new();
    let ask = |cuda: c_int, index: usize| -> Result<bool> {
        let mut out = 0;
        let index = c_int::try_from(index).unwrap_or(c_int::MAX);
        // SAFETY: a plain int out; the C++ side catches its exceptions.
        crate::fused::checked("bfloat16 capability", unsafe {
            sgm_bf16_matrix_units(cuda, index, &mut out)
        })?;
        Ok(out == 1)
    };
    match device {
        Device::Cpu => {
            if let Some(&known) = CPU.get() {
                return Ok(known);
            }
            let known = ask(0, 0)?;
            Ok(*CPU.get_or_init(|| known))
        }
        Device::Cuda(index) => ask(1, index),
        _ => Ok(false),
    }
}

/// Turns on or off, for this process's CPU arithmetic, the flushing of subnormal floats
/// (magnitudes below 1.18·10⁻³⁸ in float32) to zero, as inputs and as results (x86's DAZ and FTZ;
/// PyTorch's `torch.set_flush_denormal`, here on the calling thread and every thread of
/// libtorch's intra-op pool). Returns whether the CPU supports it.
///
/// Why: x86 cores compute on subnormal operands up to a hundred times slower than on normal
/// ones. Late in a float32 training run some gradients and activations of the MNIST U-Net fall
/// that low: on a 2-core Xeon without AMX its float32 epochs took 5.6 s fresh and 16 s when
/// resumed at epoch 190; with subnormals flushed the same resumed epochs took 5 to 6 s, with the
/// same losses to every printed digit, and a whole 190-epoch run flushed (986 s against
/// 1,932 s) wrote the unflushed run's weights byte for byte. [`crate::training::train`] and
/// [`crate::samplers::sample`] turn it on when they run on the CPU
/// ([`flush_subnormals_on_cpu`]); it stays on for the process, as PyTorch's setting does. It
/// changes no value above the subnormal range.
pub fn flush_subnormals(on: bool) -> Result<bool> {
    let mut supported = 0;
    // SAFETY: a plain int out; the C++ side catches its exceptions.
    crate::fused::checked("flushing subnormals", unsafe {
        sgm_flush_denormal(c_int::from(on), &mut supported)
    })?;
    Ok(supported == 1)
}

/// [`flush_subnormals`] on when `device` is the CPU (GPUs have their own modes, untouched).
pub fn flush_subnormals_on_cpu(device: Device) -> Result<()> {
    if device == Device::Cpu {
        flush_subnormals(true)?;
    }
    Ok(())
}

impl Precision {
    /// The precision that runs on `device`: [`Precision::Auto`] becomes
    /// [`Precision::Bf16Autocast`] where [`has_bf16_matrix_units`] and [`Precision::Float32`]
    /// elsewhere; the other two are themselves.
    pub fn resolve(self, device: Device) -> Result<Precision> {
        Ok(match self {
            Precision::Auto => Precision::Auto.given_units(has_bf16_matrix_units(device)?),
            fixed => fixed,
        })
    }

    /// The rule of [`Precision::resolve`] for a device that has bfloat16 matrix units or not.
    pub fn given_units(self, bf16_matrix_units: bool) -> Precision {
        match self {
            Precision::Auto if bf16_matrix_units => Precision::Bf16Autocast,
            Precision::Auto => Precision::Float32,
            fixed => fixed,
        }
    }

    /// Runs `f` in this precision for tensors on `device`'s type (autocast is per device type
    /// and per thread; the previous state comes back when `f` returns or panics).
    pub fn run<T>(self, device: Device, f: impl FnOnce() -> T) -> Result<T> {
        if self.resolve(device)? == Precision::Float32 {
            return Ok(f());
        }
        let cuda = c_int::from(device.is_cuda());
        let (mut enabled, mut dtype) = (0, 0);
        // SAFETY: plain ints out; the C++ side catches its exceptions.
        crate::fused::checked("autocast (enter)", unsafe {
            sgm_autocast_enter(cuda, &mut enabled, &mut dtype)
        })?;
        struct Exit(c_int, c_int, c_int);
        impl Drop for Exit {
            fn drop(&mut self) {
                // SAFETY: as above. Leaving restores saved values and cannot fail in practice;
                // a message would have nowhere to go from a destructor.
                let message = unsafe { sgm_autocast_exit(self.0, self.1, self.2) };
                let _ = crate::fused::checked("autocast (exit)", message);
            }
        }
        let _exit = Exit(cuda, enabled, dtype);
        Ok(f())
    }
}

/// A score evaluated in `precision` (the network's convolutions and matrix products in bfloat16
/// under [`Precision::Bf16Autocast`]), its result returned in the dtype of `x`.
#[derive(Debug, Clone, Copy)]
pub struct InPrecision<'a, S: ?Sized> {
    /// The precision of each evaluation.
    pub precision: Precision,
    /// The score evaluated.
    pub score: &'a S,
}

impl<S: Score + ?Sized> Score for InPrecision<'_, S> {
    fn forward_score(&self, x: &Tensor, sigma: &Tensor) -> Tensor {
        crate::nets::unchecked(self.try_forward_score(x, sigma))
    }

    fn try_forward_score(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        let device = self.score.device().unwrap_or(x.device());
        let s = self
            .precision
            .run(device, || self.score.try_forward_score(x, sigma))??;
        Ok(if s.kind() == x.kind() {
            s
        } else {
            s.to_kind(x.kind())
        })
    }

    fn trained_levels(&self) -> Option<&crate::noise::Sigmas> {
        self.score.trained_levels()
    }

    fn device(&self) -> Option<Device> {
        self.score.device()
    }
}
