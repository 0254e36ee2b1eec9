/*
 * tvm-patterns: the byte queue the RPC endpoint reads from and writes to ("support/ring_buffer.h").
 * Bytes live contiguously in [head_, head_ + size_) of one buffer that is compacted or grown when
 * a write needs room, so every callback sees one contiguous span.
 */
#ifndef TVM_PATTERNS_SUPPORT_RING_BUFFER_H_
#define TVM_PATTERNS_SUPPORT_RING_BUFFER_H_

#include <tvm/ffi/error.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace tvm {
namespace support {

class RingBuffer {
 public:
  /*! \return the number of bytes that can be read. */
  size_t bytes_available() const { return size_; }

  /*! \brief Make room for n readable bytes in total, keeping what is there. */
  void Reserve(size_t n) { MakeRoom(n > size_ ? n - size_ : 0); }

  /*! \brief Move size bytes out; there must be that many. */
  void Read(void* data, size_t size) {
    TVM_FFI_ICHECK_LE(size, size_);
    std::memcpy(data, buf_.data() + head_, size);
    Consume(size);
  }

  /*! \brief Append size bytes. */
  void Write(const void* data, size_t size) {
    MakeRoom(size);
    std::memcpy(buf_.data() + head_ + size_, data, size);
    size_ += size;
  }

  /*! \brief Hand up to max_nbytes readable bytes to fsend(const void*, size_t) -> bytes taken. */
  template <typename F>
  size_t ReadWithCallback(F fsend, size_t max_nbytes) {
    size_t n = fsend(static_cast<const void*>(buf_.data() + head_), std::min(max_nbytes, size_));
    Consume(n);
    return n;
  }

  /*! \brief Let frecv(void*, size_t) -> bytes filled write up to max_nbytes at the end. */
  template <typename F>
  size_t WriteWithCallback(F frecv, size_t max_nbytes) {
    MakeRoom(max_nbytes);
    size_t n = frecv(static_cast<void*>(buf_.data() + head_ + size_), max_nbytes);
    size_ += n;
    return n;
  }

 private:
  void Consume(size_t n) {
    size_ -= n;
    head_ = size_ == 0 ? 0 : head_ + n;
  }

  // Ensure n free bytes after the readable ones.
  void MakeRoom(size_t n) {
    if (head_ + size_ + n <= buf_.size()) return;
    if (head_ != 0) {
      std::memmove(buf_.data(), buf_.data() + head_, size_);
      head_ = 0;
    }
    if (size_ + n > buf_.size()) buf_.resize(std::max(size_ + n, buf_.size() * 2));
  }

  std::vector<char> buf_;
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_PATTERNS_SUPPORT_RING_BUFFER_H_
