/*
 * tvm-patterns: streams over in-memory bytes ("support/bytes_io.h").
 */
#ifndef TVM_PATTERNS_SUPPORT_BYTES_IO_H_
#define TVM_PATTERNS_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

/*! \brief Reads from its own copy of the bytes. */
class BytesInStream : public Stream {
 public:
  explicit BytesInStream(std::string data) : data_(std::move(data)) {}
  explicit BytesInStream(const ffi::Bytes& data) : data_(data.data(), data.size()) {}
  explicit BytesInStream(const ffi::String& data) : data_(data.data(), data.size()) {}
  BytesInStream(const void* data, size_t size) : data_(static_cast<const char*>(data), size) {}

  using Stream::Read;
  using Stream::Write;

  size_t Read(void* ptr, size_t size) final {
    size_t n = std::min(size, data_.size() - pos_);
    if (n != 0) std::memcpy(ptr, data_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) final {
    TVM_FFI_THROW(InternalError) << "BytesInStream is read-only";
  }

 private:
  std::string data_;
  size_t pos_ = 0;
};

/*! \brief Appends to a caller-owned std::string. */
class BytesOutStream : public Stream {
 public:
  explicit BytesOutStream(std::string* out) : out_(out) {}

  using Stream::Read;
  using Stream::Write;

  size_t Write(const void* ptr, size_t size) final {
    out_->append(static_cast<const char*>(ptr), size);
    return size;
  }
  size_t Read(void*, size_t) final {
    TVM_FFI_THROW(InternalError) << "BytesOutStream is write-only";
  }

 private:
  std::string* out_;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_PATTERNS_SUPPORT_BYTES_IO_H_
