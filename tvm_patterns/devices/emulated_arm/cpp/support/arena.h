/*
 * tvm-patterns: the bump allocator the RPC endpoint uses for per-request scratch memory
 * ("support/arena.h"). Everything allocated is released at once by RecycleAll().
 */
#ifndef TVM_PATTERNS_SUPPORT_ARENA_H_
#define TVM_PATTERNS_SUPPORT_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

namespace tvm {
namespace support {

class Arena {
 public:
  static constexpr size_t kPageSize = 16 * 1024;
  static constexpr size_t kAlign = alignof(std::max_align_t);

  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  /*! \brief Uninitialised storage for count objects of T, valid until RecycleAll(). */
  template <typename T>
  T* allocate_(int count = 1) {
    static_assert(alignof(T) <= kAlign, "over-aligned type");
    return static_cast<T*>(Alloc(sizeof(T) * static_cast<size_t>(count < 0 ? 0 : count)));
  }

  /*! \brief Construct a T in the arena (its destructor never runs). */
  template <typename T, typename... Args>
  T* make(Args&&... args) {
    return new (allocate_<T>(1)) T(std::forward<Args>(args)...);
  }

  /*! \brief Release all allocations; the first page is kept for reuse, large blocks are freed. */
  void RecycleAll() {
    if (pages_.size() > 1) pages_.resize(1);
    if (!pages_.empty() && pages_[0].size != kPageSize) pages_.clear();
    used_ = 0;
  }

 private:
  struct Page {
    std::unique_ptr<std::max_align_t[]> mem;
    size_t size;
  };

  void* Alloc(size_t nbytes) {
    nbytes = (nbytes + kAlign - 1) / kAlign * kAlign;
    if (nbytes == 0) nbytes = kAlign;
    if (pages_.empty() || used_ + nbytes > pages_.back().size) {
      size_t size = nbytes > kPageSize ? nbytes : kPageSize;
      pages_.push_back(Page{std::unique_ptr<std::max_align_t[]>(
                                new std::max_align_t[size / sizeof(std::max_align_t)]),
                            size});
      used_ = 0;
    }
    char* base = reinterpret_cast<char*>(pages_.back().mem.get());
    void* ptr = base + used_;
    used_ += nbytes;
    return ptr;
  }

  std::vector<Page> pages_;
  size_t used_ = 0;  // bytes used in pages_.back()
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_PATTERNS_SUPPORT_ARENA_H_
