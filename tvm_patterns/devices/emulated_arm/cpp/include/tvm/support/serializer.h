/*
 * tvm-patterns: Serializer<T> for the TVM runtime sources (<tvm/support/serializer.h>).
 *
 * The byte layout must equal what the host's libtvm writes (VM executables and tensors embedded in
 * exported libraries are read back by this runtime): little-endian PODs as raw bytes; strings,
 * vectors and arrays as a uint64 element count followed by the elements.
 */
#ifndef TVM_SUPPORT_SERIALIZER_H_
#define TVM_SUPPORT_SERIALIZER_H_

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/string.h>

#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <tvm/support/io.h>

namespace tvm {
namespace support {

/*! \brief Trivially copyable values: their raw bytes. */
template <typename T, typename Enable = void>
struct Serializer {
  static_assert(std::is_trivially_copyable_v<T>, "no tvm::support::Serializer for this type");
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const T& value) { strm->Write(&value, sizeof(T)); }
  static bool Read(Stream* strm, T* out) { return strm->Read(out, sizeof(T)) == sizeof(T); }
};

namespace detail {

inline void WriteCount(Stream* strm, size_t n) {
  uint64_t count = n;
  strm->Write(&count, sizeof(count));
}

inline bool ReadCount(Stream* strm, uint64_t* n) {
  return strm->Read(n, sizeof(*n)) == sizeof(*n);
}

template <typename T>
void WriteElems(Stream* strm, const T* data, size_t n) {
  if constexpr (IsRaw<T>::value) {
    if (n != 0) strm->Write(data, n * sizeof(T));
  } else {
    for (size_t i = 0; i < n; ++i) Serializer<T>::Write(strm, data[i]);
  }
}

template <typename T>
bool ReadElems(Stream* strm, T* data, size_t n) {
  if constexpr (IsRaw<T>::value) {
    return n == 0 || strm->Read(data, n * sizeof(T)) == n * sizeof(T);
  } else {
    for (size_t i = 0; i < n; ++i) {
      if (!Serializer<T>::Read(strm, data + i)) return false;
    }
    return true;
  }
}

}  // namespace detail

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::string& s) {
    detail::WriteCount(strm, s.size());
    if (!s.empty()) strm->Write(s.data(), s.size());
  }
  static bool Read(Stream* strm, std::string* out) {
    uint64_t n;
    if (!detail::ReadCount(strm, &n)) return false;
    out->resize(n);
    return n == 0 || strm->Read(&(*out)[0], n) == n;
  }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::String& s) {
    detail::WriteCount(strm, s.size());
    if (s.size() != 0) strm->Write(s.data(), s.size());
  }
  static bool Read(Stream* strm, ffi::String* out) {
    std::string s;
    if (!Serializer<std::string>::Read(strm, &s)) return false;
    *out = ffi::String(std::move(s));
    return true;
  }
};

template <typename T, typename A>
struct Serializer<std::vector<T, A>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::vector<T, A>& v) {
    detail::WriteCount(strm, v.size());
    detail::WriteElems(strm, v.data(), v.size());
  }
  static bool Read(Stream* strm, std::vector<T, A>* out) {
    uint64_t n;
    if (!detail::ReadCount(strm, &n)) return false;
    out->resize(n);
    return detail::ReadElems(strm, out->data(), n);
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Array<T>& arr) {
    detail::WriteCount(strm, arr.size());
    for (const T& x : arr) Serializer<T>::Write(strm, x);
  }
  static bool Read(Stream* strm, ffi::Array<T>* out) {
    uint64_t n;
    if (!detail::ReadCount(strm, &n)) return false;
    ffi::Array<T> arr;
    arr.reserve(n);
    for (uint64_t i = 0; i < n; ++i) {
      T x;
      if (!Serializer<T>::Read(strm, &x)) return false;
      arr.push_back(std::move(x));
    }
    *out = std::move(arr);
    return true;
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::pair<A, B>& p) {
    Serializer<A>::Write(strm, p.first);
    Serializer<B>::Write(strm, p.second);
  }
  static bool Read(Stream* strm, std::pair<A, B>* out) {
    return Serializer<A>::Read(strm, &out->first) && Serializer<B>::Read(strm, &out->second);
  }
};

namespace detail {
template <typename M>
struct MapSerializer {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const M& m) {
    WriteCount(strm, m.size());
    for (const auto& kv : m) {
      Serializer<typename M::key_type>::Write(strm, kv.first);
      Serializer<typename M::mapped_type>::Write(strm, kv.second);
    }
  }
  static bool Read(Stream* strm, M* out) {
    uint64_t n;
    if (!ReadCount(strm, &n)) return false;
    out->clear();
    for (uint64_t i = 0; i < n; ++i) {
      typename M::key_type k;
      typename M::mapped_type v;
      if (!Serializer<typename M::key_type>::Read(strm, &k)) return false;
      if (!Serializer<typename M::mapped_type>::Read(strm, &v)) return false;
      out->emplace(std::move(k), std::move(v));
    }
    return true;
  }
};
}  // namespace detail

template <typename K, typename V, typename C, typename A>
struct Serializer<std::map<K, V, C, A>> : detail::MapSerializer<std::map<K, V, C, A>> {};
template <typename K, typename V, typename H, typename E, typename A>
struct Serializer<std::unordered_map<K, V, H, E, A>>
    : detail::MapSerializer<std::unordered_map<K, V, H, E, A>> {};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_SERIALIZER_H_
