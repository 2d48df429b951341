// The C side's error convention, shared by fused.cpp and cuda_graph.cpp: an entry point returns
// nullptr on success, else the exception's message in a string allocated with malloc, which the
// Rust side frees (`fused::take_message`).
#pragma once

#include <cstdlib>
#include <cstring>
#include <exception>

namespace sgm {

inline char *message(const char *what) {
  char *copy = static_cast<char *>(std::malloc(std::strlen(what) + 1));
  if (copy != nullptr) std::strcpy(copy, what);
  return copy;
}

// Runs `f`, turning any C++ exception into its message.
template <typename F>
char *guarded(F f) {
  try {
    f();
    return nullptr;
  } catch (const std::exception &e) {
    return message(e.what());
  } catch (...) {
    return message("unknown C++ exception");
  }
}

}  // namespace sgm
