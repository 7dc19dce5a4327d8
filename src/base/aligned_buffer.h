// A heap buffer aligned for SIMD loads (64 bytes: one cache line, one AVX-512 vector).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

namespace slimkv {

inline constexpr size_t kAlignment = 64;

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
    const size_t bytes = (count * sizeof(T) + kAlignment - 1) / kAlignment * kAlignment;
    void* p = std::aligned_alloc(kAlignment, bytes);
    if (!p) throw std::bad_alloc();
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
