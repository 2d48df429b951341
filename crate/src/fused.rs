//! libtorch's fused and multi-tensor ("foreach") kernels, which tch's generated bindings skip:
//! one call updates every parameter, where a loop launches a chain of kernels per parameter
//! (the per-operation overhead that bounds small networks' training, on the GPU most of all).
//! They come from `csrc/fused.cpp`, compiled by `build.rs` against the same libtorch.
//!
//! - [`adam`]: `torch._fused_adam_`, the kernel behind `torch.optim.Adam(fused=True)` (CPU and
//!   CUDA), computing what [`crate::training::Adam`] documents.
//! - [`lerp`]: `torch._foreach_lerp_`, `a ← a + w (b − a)` over lists (the EMA update).
//! - [`channels_last`]: `Tensor.contiguous(memory_format=torch.channels_last)`, the layout in
//!   which oneDNN's and cuDNN's convolutions run fastest.

use crate::error::{Error, Result};
use std::ffi::{c_char, c_void, CStr};
use tch::Tensor;

extern "C" {
    fn sgm_fused_adam(
        params: *const *mut c_void,
        grads: *const *mut c_void,
        exp_avgs: *const *mut c_void,
        exp_avg_sqs: *const *mut c_void,
        steps: *const *mut c_void,
        n: usize,
        lr: f64,
        lr_on_device: *mut c_void,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> *mut c_char;
    fn sgm_foreach_lerp(
        selves: *const *mut c_void,
        ends: *const *mut c_void,
        n: usize,
        weight: f64,
        weight_on_device: *mut c_void,
    ) -> *mut c_char;
    fn sgm_channels_last(t: *mut c_void, out: *mut *mut c_void) -> *mut c_char;
}

/// The handles of `tensors` as the C++ side takes them (`at::Tensor*`). The kernels update
/// the tensors' storage in place; the handles stay owned by the `Tensor`s.
fn handles(tensors: &[&Tensor]) -> Vec<*mut c_void> {
    tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

/// The C++ side's answer (`csrc/guarded.h`: null, or a malloc'ed message, freed here) as the
/// message's first line (libtorch appends its C++ stack trace).
pub(crate) fn take_message(answer: *mut c_char) -> Option<String> {
    if answer.is_null() {
        return None;
    }
    // SAFETY: a non-null answer is a NUL-terminated string from malloc, ours to free.
    let text = unsafe { CStr::from_ptr(answer) }
        .to_string_lossy()
        .into_owned();
    unsafe { libc::free(answer.cast()) };
    Some(text.lines().next().unwrap_or("").to_string())
}

/// Turns the C++ side's answer into a result naming `op`.
pub(crate) fn checked(op: &str, answer: *mut c_char) -> Result<()> {
    match take_message(answer) {
        None => Ok(()),
        Some(first) => Err(Error::TorchOp {
            op: op.to_string(),
            source: tch::TchError::Torch(first),
        }),
    }
}

fn same_lengths(op: &str, lengths: &[usize]) -> Result<()> {
    if lengths.windows(2).all(|w| w[0] == w[1]) {
        Ok(())
    } else {
        Err(Error::TorchOp {
            op: op.to_string(),
            source: tch::TchError::Shape(format!("lists of different lengths {lengths:?}")),
        })
    }
}

/// Adam's hyper-parameters, as `torch.optim.Adam` names them.
#[derive(Debug, Clone, Copy)]
pub struct AdamHyper {
    /// Learning rate.
    pub lr: f64,
    /// `β₁`, the first moment's decay.
    pub beta1: f64,
    /// `β₂`, the second moment's decay.
    pub beta2: f64,
    /// `ε`, added to `√v̂`.
    pub eps: f64,
    /// L2 weight decay (added to the gradient).
    pub weight_decay: f64,
}

/// One Adam step over every parameter in one call: with `t` the value in `step` (a float32
/// scalar on the parameters' device, already advanced by the caller) and the learning rate
/// `hyper.lr`, or the value in `lr_on_device` (a float32 scalar there) when given, read when the
/// kernel runs (so a captured CUDA graph follows a rate changed between replays),
/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `θ ← θ − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`.
/// All lists have one entry per parameter; errors (lists of different lengths, devices or
/// dtypes that differ) come back as [`Error::TorchOp`] naming `_fused_adam_`.
pub fn adam(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avgs: &[&Tensor],
    exp_avg_sqs: &[&Tensor],
    step: &Tensor,
    hyper: AdamHyper,
    lr_on_device: Option<&Tensor>,
) -> Result<()> {
    const OP: &str = "_fused_adam_";
    let n = params.len();
    same_lengths(OP, &[n, grads.len(), exp_avgs.len(), exp_avg_sqs.len()])?;
    let steps = vec![step; n];
    let (p, g, m, v, t) = (
        handles(params),
        handles(grads),
        handles(exp_avgs),
        handles(exp_avg_sqs),
        handles(&steps),
    );
    // SAFETY: every pointer is a live `at::Tensor*` borrowed for the call's duration; the
    // lengths were checked above.
    let answer = unsafe {
        sgm_fused_adam(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            t.as_ptr(),
            n,
            hyper.lr,
            on_device(lr_on_device),
            hyper.beta1,
            hyper.beta2,
            hyper.weight_decay,
            hyper.eps,
        )
    };
    checked(OP, answer)
}

/// `a ← a + weight · (b − a)` for every pair, in one call (`torch._foreach_lerp_`).
pub fn lerp(selves: &[&Tensor], ends: &[&Tensor], weight: f64) -> Result<()> {
    foreach_lerp(selves, ends, weight, None)
}

/// [`lerp`] with the weight read from `weight` (a scalar tensor on the lists' device) when
/// the kernels run: `_foreach_sub`, `_foreach_mul_`, `_foreach_add_`.
pub fn lerp_on_device(selves: &[&Tensor], ends: &[&Tensor], weight: &Tensor) -> Result<()> {
    foreach_lerp(selves, ends, f64::NAN, Some(weight))
}

/// The one entry behind [`lerp`] and [`lerp_on_device`]: the device weight wins when given.
fn foreach_lerp(
    selves: &[&Tensor],
    ends: &[&Tensor],
    weight: f64,
    weight_on_device: Option<&Tensor>,
) -> Result<()> {
    const OP: &str = "_foreach_lerp_";
    same_lengths(OP, &[selves.len(), ends.len()])?;
    let (a, b) = (handles(selves), handles(ends));
    // SAFETY: as in `adam`; a null device weight selects the host's.
    let answer = unsafe {
        sgm_foreach_lerp(
            a.as_ptr(),
            b.as_ptr(),
            a.len(),
            weight,
            on_device(weight_on_device),
        )
    };
    checked(OP, answer)
}

/// An optional tensor as the C side takes it: its handle, or null.
fn on_device(t: Option<&Tensor>) -> *mut c_void {
    t.map_or(std::ptr::null_mut(), |t| t.as_ptr() as *mut c_void)
}

/// `x` laid out channels-last (`[n, c, h, w]` with NHWC strides: same shape, same values), as
/// `x.contiguous(memory_format=torch.channels_last)`. Convolutions, pooling and concatenation
/// keep the layout, so a network whose input is channels-last runs channels-last throughout;
/// its parameters and their gradients keep theirs (PyTorch's gradient layout contract), so
/// [`adam`] and [`lerp`] see matching strides. An input that is not 4-D is a
/// [`Error::TorchOp`].
pub fn channels_last(x: &Tensor) -> Result<Tensor> {
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: `x` is a live `at::Tensor*` for the call; on success `out` is a new
    // `at::Tensor*` that nothing else owns, so the returned `Tensor` takes it.
    let answer = unsafe { sgm_channels_last(x.as_ptr() as *mut c_void, &mut out) };
    checked("contiguous(channels_last)", answer)?;
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}
