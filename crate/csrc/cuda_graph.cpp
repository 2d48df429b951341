// CUDA graphs through libtorch's at::cuda::CUDAGraph (what torch.cuda.CUDAGraph wraps): a
// fixed-shape computation captured once on a side stream and replayed with one launch. Each
// capture gets a private memory pool, and each replay advances the CUDA generator's offset by
// what the captured kernels draw, so every replay draws new noise.
//
// build.rs compiles this into its own shared library, linked against libtorch_cuda, c10_cuda
// and cudart, which the crate loads only after libtorch's CUDA backend is loaded and a GPU is
// in use: the libraries it needs are then already in the process. Binaries stay free of a
// link-time dependency on CUDA, so they start on CPU-only machines.
//
// A tensor handle is tch's `C_tensor*` (an `at::Tensor*`). Each function returns nullptr on
// success, else a message allocated with malloc that the caller frees.
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "guarded.h"

#include <optional>

namespace {

using sgm::guarded;

// A stream of libtorch's pool made the thread's current stream between enter and exit, after
// the work already queued on the previous current stream; exit makes that stream wait for it.
struct SideStream {
  c10::DeviceIndex device;
  c10::cuda::CUDAStream side;
  std::optional<c10::cuda::CUDAStream> outer;
};

// `a` waits, on the device, for the work queued on `b` so far.
void wait_for(const c10::cuda::CUDAStream &a, const c10::cuda::CUDAStream &b) {
  at::cuda::CUDAEvent done;
  done.record(b);
  done.block(a);
}

}  // namespace

extern "C" {

char *sgm_side_stream_enter(int device, void **out) {
  return guarded([&] {
    auto index = static_cast<c10::DeviceIndex>(device);
    c10::cuda::CUDAGuard guard(index);
    auto *s = new SideStream{index, c10::cuda::getStreamFromPool(false, index), std::nullopt};
    auto outer = c10::cuda::getCurrentCUDAStream(index);
    wait_for(s->side, outer);
    c10::cuda::setCurrentCUDAStream(s->side);
    s->outer = outer;
    *out = s;
  });
}

char *sgm_side_stream_exit(void *handle) {
  auto *s = static_cast<SideStream *>(handle);
  char *answer = guarded([&] {
    c10::cuda::CUDAGuard guard(s->device);
    wait_for(*s->outer, s->side);
    c10::cuda::setCurrentCUDAStream(*s->outer);
  });
  delete s;
  return answer;
}

char *sgm_graph_new(void **out) {
  return guarded([&] { *out = new at::cuda::CUDAGraph(); });
}

void sgm_graph_free(void *graph) { delete static_cast<at::cuda::CUDAGraph *>(graph); }

// Starts recording the work of GPU `device`'s current stream (a side stream, not the default
// one).
char *sgm_graph_capture_begin(void *graph, int device) {
  return guarded([&] {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
    static_cast<at::cuda::CUDAGraph *>(graph)->capture_begin();
  });
}

// Stops recording and instantiates the graph.
char *sgm_graph_capture_end(void *graph, int device) {
  return guarded([&] {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
    static_cast<at::cuda::CUDAGraph *>(graph)->capture_end();
  });
}

// Launches the recorded work on GPU `device`'s current stream.
char *sgm_graph_replay(void *graph, int device) {
  return guarded([&] {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
    static_cast<at::cuda::CUDAGraph *>(graph)->replay();
  });
}

}  // extern "C"
