// libtorch's multi-tensor ("foreach") and fused optimiser kernels, which tch's generated bindings
// skip (tch's gen/gen.ml leaves out `_fused_*` and `_foreach_*`): one call updates every
// parameter, where a loop over parameters launches a chain of kernels for each.
//
// A tensor handle here is tch's `C_tensor*`, which is an `at::Tensor*` (torch-sys's
// torch_api.h: `typedef torch::Tensor *tensor;`). Each function returns nullptr on success,
// else a message allocated with malloc that the caller frees.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/Utils.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/DeviceGuard.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_lerp.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_sub.h>
#include <ATen/ops/_fused_adam.h>

#include "guarded.h"

#include <dlfcn.h>
#include <vector>

namespace {

using sgm::guarded;

std::vector<at::Tensor> list(at::Tensor **handles, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*handles[i]);
  return out;
}


}  // namespace

extern "C" {

// One Adam step over n parameters (torch.optim.Adam(fused=True)'s kernel, no AMSGrad): each
// `steps[i]` holds the step number t (float32, on the parameter's device; the same tensor may
// be passed for every parameter), already advanced by the caller. The learning rate is `lr`,
// or, when `lr_on_device` is not null, the float32 scalar it holds on the parameters' device,
// read when the kernel runs (a CUDA graph that captured the step follows a rate changed
// between replays).
char *sgm_fused_adam(at::Tensor **params, at::Tensor **grads, at::Tensor **exp_avgs,
                     at::Tensor **exp_avg_sqs, at::Tensor **steps, size_t n, double lr,
                     at::Tensor *lr_on_device, double beta1, double beta2, double weight_decay,
                     double eps) {
  return guarded([&] {
    auto p = list(params, n), g = list(grads, n), m = list(exp_avgs, n),
         v = list(exp_avg_sqs, n), t = list(steps, n);
    std::vector<at::Tensor> none;
    if (lr_on_device != nullptr) {
      at::_fused_adam_(p, g, m, v, none, t, *lr_on_device, beta1, beta2, weight_decay, eps,
                       /*amsgrad=*/false, /*maximize=*/false);
    } else {
      at::_fused_adam_(p, g, m, v, none, t, lr, beta1, beta2, weight_decay, eps,
                       /*amsgrad=*/false, /*maximize=*/false);
    }
  });
}

// self[i] += w * (ends[i] - self[i]) for every i: w = `weight` in one call, or, when
// `weight_on_device` is not null, the scalar it holds on their device, read when the kernels
// run (three multi-tensor kernels).
char *sgm_foreach_lerp(at::Tensor **self, at::Tensor **ends, size_t n, double weight,
                       at::Tensor *weight_on_device) {
  return guarded([&] {
    auto s = list(self, n), e = list(ends, n);
    if (weight_on_device != nullptr) {
      auto step = at::_foreach_sub(e, s);
      at::_foreach_mul_(step, *weight_on_device);
      at::_foreach_add_(s, step);
    } else {
      at::_foreach_lerp_(s, e, at::Scalar(weight));
    }
  });
}

// Autocast to bfloat16 on the CPU (`cuda` = 0) or CUDA (`cuda` = 1) for this thread, nested;
// the previous state goes to `prev_enabled` and `prev_dtype` for sgm_autocast_exit.
char *sgm_autocast_enter(int cuda, int *prev_enabled, int *prev_dtype) {
  return guarded([&] {
    auto type = cuda ? at::kCUDA : at::kCPU;
    *prev_enabled = at::autocast::is_autocast_enabled(type) ? 1 : 0;
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(type));
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::set_autocast_enabled(type, true);
    at::autocast::increment_nesting();
  });
}

// Leaves the autocast scope entered by sgm_autocast_enter, restoring the state it saved; the
// outermost exit clears the cache of cast weights.
char *sgm_autocast_exit(int cuda, int prev_enabled, int prev_dtype) {
  return guarded([&] {
    auto type = cuda ? at::kCUDA : at::kCPU;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type, prev_enabled != 0);
    at::autocast::set_autocast_dtype(type, static_cast<at::ScalarType>(prev_dtype));
  });
}

// `*out` = 1 when the device type has bfloat16 matrix units, else 0. CPU (`cuda` = 0): the
// cpuinfo library's AMX-BF16 flag (torch.backends.cpu's capabilities), and the kernel lets this
// process use the AMX tiles (at::cpu::init_amx, which oneDNN would otherwise ask for itself).
// CUDA (`cuda` = 1): GPU `index` supports cuDNN's bfloat16 convolutions, compute capability
// >= 8 (Ampere and later; the hook asks the current device, hence the guard).
char *sgm_bf16_matrix_units(int cuda, int index, int *out) {
  return guarded([&] {
    if (cuda) {
      c10::DeviceGuard guard(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index)));
      *out = at::detail::getCUDAHooks().supportsBFloat16ConvolutionWithCuDNNv8() ? 1 : 0;
      return;
    }
    auto caps = at::cpu::get_cpu_capabilities();
    auto amx = caps.find("amx_bf16");
    *out = amx != caps.end() && amx->second.isBool() && amx->second.toBool() && at::cpu::init_amx()
               ? 1
               : 0;
  });
}

// Subnormal floats flushed to zero and read as zero (x86's FTZ and DAZ) on the calling thread
// and on each thread of its OpenMP team, libtorch's intra-op pool (`torch.set_flush_denormal`
// sets the caller's only). The team is reached through libgomp's own entry for `omp parallel`,
// found in the process (libtorch's libgomp), because this file is not built with OpenMP: ATen's
// parallel_for, inlined here, would run serially. `*supported` = 0 where the CPU cannot.
static void flush_denormal_here(void *on) {
  at::globalContext().setFlushDenormal(*static_cast<int *>(on) != 0);
}

char *sgm_flush_denormal(int on, int *supported) {
  return guarded([&] {
    *supported = at::globalContext().setFlushDenormal(on != 0) ? 1 : 0;
    using GompParallel = void (*)(void (*)(void *), void *, unsigned, unsigned);
    if (auto parallel = reinterpret_cast<GompParallel>(dlsym(RTLD_DEFAULT, "GOMP_parallel"))) {
      parallel(flush_denormal_here, &on, 0, 0);  // 0 threads: the team's usual size
    }
  });
}

// cuDNN's float32 convolutions in TF32 (`on` = 1, libtorch's default) or IEEE float32 (0).
char *sgm_cuda_conv_tf32(int on) {
  return guarded([&] {
    at::globalContext().setFloat32Precision(
        at::Float32Backend::CUDA, at::Float32Op::CONV,
        on ? at::Float32Precision::TF32 : at::Float32Precision::IEEE);
  });
}

// `*out` = `t` laid out channels-last (NHWC strides, same shape and values): a new tensor
// handle for the caller to own (tch's `Tensor::from_ptr`), or `t`'s storage when it already is.
char *sgm_channels_last(at::Tensor *t, at::Tensor **out) {
  return guarded([&] { *out = new at::Tensor(t->contiguous(at::MemoryFormat::ChannelsLast)); });
}

}  // extern "C"
