// A heap buffer aligned for SIMD loads (64 bytes: one cache line, one AVX-512 vector); one of
// 8 MiB or more starts on a huge page and asks for huge pages (base/huge_pages.h).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

#include "base/huge_pages.h"

namespace slimkv {

inline constexpr size_t kAlignment = 64;
inline constexpr size_t kHugeBufferBytes = 4 * kHugePageBytes;

template <typename T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t count) { Resize(count); }
  AlignedBuffer(AlignedBuffer&& o) noexcept : p_(std::move(o.p_)), n_(o.n_) { o.n_ = 0; }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    p_ = std::move(o.p_);
    n_ = o.n_;
    o.n_ = 0;
    return *this;
  }

  // Discards the contents; new memory is zeroed.
  void Resize(size_t count) {
    n_ = count;
    if (count == 0) {
      p_.reset();
      return;
    }
    // Buffers of several huge pages (weight matrices the decode streams) start on one and
    // are advised to take them (base/huge_pages.h).
    const bool huge = count * sizeof(T) >= kHugeBufferBytes;
    const size_t align = huge ? kHugePageBytes : kAlignment;
    const size_t bytes = (count * sizeof(T) + align - 1) / align * align;
    void* p = std::aligned_alloc(align, bytes);
    if (!p) throw std::bad_alloc();
    if (huge) AdviseHugePages(p, bytes);
    std::memset(p, 0, bytes);
    p_.reset(static_cast<T*>(p));
  }
  AlignedBuffer Copy() const {
    AlignedBuffer b(n_);
    if (n_) std::memcpy(b.data(), data(), n_ * sizeof(T));
    return b;
  }

  T* data() { return p_.get(); }
  const T* data() const { return p_.get(); }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return p_.get()[i]; }
  const T& operator[](size_t i) const { return p_.get()[i]; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> p_;
  size_t n_ = 0;
};

}  // namespace slimkv
