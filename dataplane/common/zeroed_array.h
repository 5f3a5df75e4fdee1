// ZeroedArray<T>: a fixed-size array whose storage starts zero-filled and untouched, for the
// rings and pools a queue pair sizes for its worst case at creation and mostly never fills.
//
// Fresh anonymous pages are zero already and are neither faulted in nor counted in RSS until a
// slot on them is used. Arrays of a page or more are mapped directly, whatever allocator the
// process runs with: a sanitizer's calloc writes every byte, and glibc's writes chunk headers
// into fresh heap memory and clears recycled memory, so the few-KiB queues of a soft QP taken
// from the heap were touched whole (an idle default VQP: 576 KiB resident, 74 KiB mapped).
// Adjacent mappings merge in the kernel (1,000 VQPs: under 500 mappings in the agent). Smaller
// arrays come from calloc. A vector of the same size writes every element at construction: a
// VQP of 8 soft QPs touched ~0.8 MiB to be created, most of its creation time (page faults are
// expensive under a hypervisor) and of an idle VQP's memory.
//
// T must be trivially destructible and an implicit-lifetime type (an aggregate, or trivially
// default-constructible), so the zero bytes are objects of T; and all-zero bytes must be a
// valid state of T. Users reset a slot's fields when they take it, as they do on reuse; the zero
// state is only what an untouched slot reads as.
//
// Not thread-safe (like a vector); the owner's thread rules apply. Allocate() may fail (no
// memory): callers turn that into a status; an empty array has size() == 0.
#ifndef BRAID_DATAPLANE_COMMON_ZEROED_ARRAY_H_
#define BRAID_DATAPLANE_COMMON_ZEROED_ARRAY_H_

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <type_traits>
#include <utility>

namespace braid::common {

template <typename T>
class ZeroedArray {
  static_assert(std::is_trivially_destructible_v<T>, "ZeroedArray never runs destructors");
  static_assert(std::is_aggregate_v<T> || std::is_trivially_default_constructible_v<T>,
                "zero bytes from calloc or mmap must be objects of T (implicit lifetime)");

 public:
  ZeroedArray() = default;
  ZeroedArray(ZeroedArray&& other) noexcept
      : data_(std::move(other.data_)), size_(std::exchange(other.size_, 0)) {}
  ZeroedArray& operator=(ZeroedArray&& other) noexcept {
    data_ = std::move(other.data_);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }

  // Arrays of at least this many bytes (a page) are mapped directly.
  static constexpr size_t kMapBytes = 4 << 10;

  // Replaces the contents with `n` zeroed elements; false (and empty) when out of memory.
  [[nodiscard]] bool Allocate(size_t n) {
    data_.reset();
    size_ = 0;
    if (n == 0) return true;
    if (n > SIZE_MAX / sizeof(T)) return false;
    const size_t bytes = n * sizeof(T);
    if (bytes >= kMapBytes) {
      void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) return false;
      data_ = std::unique_ptr<T, Free>(static_cast<T*>(p), Free{bytes});
    } else {
      data_ = std::unique_ptr<T, Free>(static_cast<T*>(std::calloc(n, sizeof(T))), Free{0});
      if (data_ == nullptr) return false;
    }
    size_ = n;
    return true;
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  T& operator[](size_t i) { return data_.get()[i]; }
  const T& operator[](size_t i) const { return data_.get()[i]; }
  T* begin() { return data_.get(); }
  T* end() { return data_.get() + size_; }
  const T* begin() const { return data_.get(); }
  const T* end() const { return data_.get() + size_; }

 private:
  struct Free {
    size_t mapped = 0;  // bytes mapped with mmap; 0: from calloc
    void operator()(T* p) const {
      if (mapped != 0) {
        munmap(static_cast<void*>(p), mapped);
      } else {
        std::free(p);
      }
    }
  };
  std::unique_ptr<T, Free> data_;
  size_t size_ = 0;
};

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_ZEROED_ARRAY_H_
