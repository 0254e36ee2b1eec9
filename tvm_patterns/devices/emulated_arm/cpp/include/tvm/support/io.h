/*
 * tvm-patterns: the byte-stream interface the TVM runtime sources include as <tvm/support/io.h>.
 * The apache-tvm wheel ships the runtime sources but not this header; this is the project's own
 * version, written against how the runtime uses it.
 */
#ifndef TVM_SUPPORT_IO_H_
#define TVM_SUPPORT_IO_H_

#include <cstddef>
#include <type_traits>
#include <utility>

namespace tvm {
namespace support {

namespace detail {
// Element arrays of these are written as one raw block; pairs go field by field (no padding bytes).
template <typename T>
struct IsRaw : std::is_trivially_copyable<T> {};
template <typename A, typename B>
struct IsRaw<std::pair<A, B>> : std::false_type {};
}  // namespace detail

// Defined in serializer.h: Serializer<T>::Write(Stream*, const T&), ::Read(Stream*, T*) -> bool.
template <typename T, typename Enable>
struct Serializer;

/*! \brief A binary stream; typed reads and writes go through Serializer<T>. */
class Stream {
 public:
  virtual ~Stream() = default;
  /*! \return the number of bytes read (less than size at the end of the stream). */
  virtual size_t Read(void* ptr, size_t size) = 0;
  /*! \return the number of bytes written. */
  virtual size_t Write(const void* ptr, size_t size) = 0;

  template <typename T>
  void Write(const T& value) {
    Serializer<T, void>::Write(this, value);
  }
  template <typename T>
  bool Read(T* out) {
    return Serializer<T, void>::Read(this, out);
  }
  template <typename T>
  void WriteArray(const T* data, size_t num_elems) {
    if constexpr (detail::IsRaw<T>::value) {
      if (num_elems != 0) Write(static_cast<const void*>(data), num_elems * sizeof(T));
    } else {
      for (size_t i = 0; i < num_elems; ++i) Write(data[i]);
    }
  }
  template <typename T>
  bool ReadArray(T* data, size_t num_elems) {
    if constexpr (detail::IsRaw<T>::value) {
      size_t nbytes = num_elems * sizeof(T);
      return nbytes == 0 || Read(static_cast<void*>(data), nbytes) == nbytes;
    } else {
      for (size_t i = 0; i < num_elems; ++i) {
        if (!Read(data + i)) return false;
      }
      return true;
    }
  }
};

}  // namespace support
}  // namespace tvm

#include <tvm/support/serializer.h>

#endif  // TVM_SUPPORT_IO_H_
