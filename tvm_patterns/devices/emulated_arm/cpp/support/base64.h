/*
 * tvm-patterns: base64 streams ("support/base64.h"); the runtime uses them for tensors in JSON.
 * Standard alphabet, '=' padding.
 */
#ifndef TVM_PATTERNS_SUPPORT_BASE64_H_
#define TVM_PATTERNS_SUPPORT_BASE64_H_

#include <tvm/ffi/error.h>
#include <tvm/support/io.h>

#include <cctype>
#include <cstdint>
#include <string>

namespace tvm {
namespace support {

namespace base64 {
inline const char* Alphabet() {
  return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}
inline int Decode(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace base64

/*! \brief Encodes what is written to it into the wrapped stream; call Finish() at the end. */
class Base64OutStream : public Stream {
 public:
  explicit Base64OutStream(Stream* out) : out_(out) {}
  using Stream::Read;
  using Stream::Write;

  size_t Write(const void* ptr, size_t size) final {
    const unsigned char* p = static_cast<const unsigned char*>(ptr);
    for (size_t i = 0; i < size; ++i) {
      group_[ngroup_++] = p[i];
      if (ngroup_ == 3) EmitGroup();
    }
    return size;
  }
  size_t Read(void*, size_t) final { TVM_FFI_THROW(InternalError) << "write-only stream"; }

  /*! \brief Emit the last partial group with padding. */
  void Finish() {
    if (ngroup_ != 0) EmitGroup();
  }

 private:
  void EmitGroup() {
    const char* a = base64::Alphabet();
    uint32_t v = (uint32_t(group_[0]) << 16) | (uint32_t(ngroup_ > 1 ? group_[1] : 0) << 8) |
                 uint32_t(ngroup_ > 2 ? group_[2] : 0);
    char enc[4] = {a[(v >> 18) & 63], a[(v >> 12) & 63], ngroup_ > 1 ? a[(v >> 6) & 63] : '=',
                   ngroup_ > 2 ? a[v & 63] : '='};
    out_->Write(static_cast<const void*>(enc), 4);
    ngroup_ = 0;
  }

  Stream* out_;
  unsigned char group_[3] = {0, 0, 0};
  int ngroup_ = 0;
};

/*! \brief Decodes base64 read from the wrapped stream (whitespace is skipped). */
class Base64InStream : public Stream {
 public:
  explicit Base64InStream(Stream* in) : in_(in) {}
  using Stream::Read;
  using Stream::Write;

  /*! \brief Kept for the runtime's call sequence; decoding skips leading whitespace anyway. */
  void InitPosition() {}

  size_t Read(void* ptr, size_t size) final {
    unsigned char* p = static_cast<unsigned char*>(ptr);
    size_t n = 0;
    while (n < size) {
      if (nbuf_ == 0 && !Refill()) break;
      p[n++] = buf_[pos_++];
      --nbuf_;
    }
    return n;
  }
  size_t Write(const void*, size_t) final { TVM_FFI_THROW(InternalError) << "read-only stream"; }

 private:
  // Decode the next group of 4 characters into buf_.
  bool Refill() {
    int vals[4];
    int nchar = 0, npad = 0;
    while (nchar < 4) {
      char c;
      if (in_->Read(static_cast<void*>(&c), 1) != 1) return false;
      if (std::isspace(static_cast<unsigned char>(c))) continue;
      if (c == '=') {
        vals[nchar++] = 0;
        ++npad;
        continue;
      }
      int d = base64::Decode(c);
      TVM_FFI_ICHECK_GE(d, 0) << "invalid base64 character";
      vals[nchar++] = d;
    }
    uint32_t v = (uint32_t(vals[0]) << 18) | (uint32_t(vals[1]) << 12) | (uint32_t(vals[2]) << 6) |
                 uint32_t(vals[3]);
    buf_[0] = (v >> 16) & 255;
    buf_[1] = (v >> 8) & 255;
    buf_[2] = v & 255;
    nbuf_ = 3 - npad;
    pos_ = 0;
    return nbuf_ > 0;
  }

  Stream* in_;
  unsigned char buf_[3] = {0, 0, 0};
  int nbuf_ = 0;
  int pos_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_PATTERNS_SUPPORT_BASE64_H_
