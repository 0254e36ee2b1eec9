/*
 * tvm-patterns: the TCP socket wrapper the TVM RPC sources include as "support/socket.h"
 * (POSIX only). TCPSocket is a plain handle: copies share the descriptor, Close() ends it.
 */
#ifndef TVM_PATTERNS_SUPPORT_SOCKET_H_
#define TVM_PATTERNS_SUPPORT_SOCKET_H_

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>
#include <tvm/ffi/error.h>

#include <cstring>
#include <string>

namespace tvm {
namespace support {

/*! \brief An IPv4/IPv6 address resolved from a host name and port. */
class SockAddr {
 public:
  SockAddr() { std::memset(&addr_, 0, sizeof(addr_)); }
  SockAddr(const char* host, int port) : SockAddr() {
    addrinfo hints;
    std::memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    std::string service = std::to_string(port);
    int rc = getaddrinfo(host, service.c_str(), &hints, &res);
    TVM_FFI_ICHECK(rc == 0 && res != nullptr)
        << "cannot resolve " << host << ":" << port << ": " << gai_strerror(rc);
    std::memcpy(&addr_, res->ai_addr, res->ai_addrlen);
    len_ = res->ai_addrlen;
    freeaddrinfo(res);
  }
  int ss_family() const { return addr_.ss_family; }
  const sockaddr* addr() const { return reinterpret_cast<const sockaddr*>(&addr_); }
  sockaddr* addr() { return reinterpret_cast<sockaddr*>(&addr_); }
  socklen_t len() const { return len_; }
  socklen_t* mutable_len() { return &len_; }
  int port() const {
    if (addr_.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&addr_)->sin6_port);
    return ntohs(reinterpret_cast<const sockaddr_in*>(&addr_)->sin_port);
  }
  std::string AsString() const {
    char host[INET6_ADDRSTRLEN] = "?";
    const void* src = addr_.ss_family == AF_INET6
                          ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(&addr_)->sin6_addr)
                          : static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(&addr_)->sin_addr);
    inet_ntop(addr_.ss_family, src, host, sizeof(host));
    return std::string(host) + ":" + std::to_string(port());
  }

 private:
  sockaddr_storage addr_;
  socklen_t len_ = sizeof(sockaddr_storage);
};

class Socket {
 public:
  using SockType = int;
  static constexpr SockType kInvalid = -1;

  /*! \brief Throw an error naming the failed call and errno. */
  [[noreturn]] static void Error(const char* what) {
    TVM_FFI_THROW(InternalError) << "socket error in " << what << ": " << std::strerror(errno);
    __builtin_unreachable();
  }

  SockType sockfd = kInvalid;

  explicit Socket(SockType fd = kInvalid) : sockfd(fd) {}

  bool IsClosed() const { return sockfd == kInvalid; }
  /*! \return whether the descriptor is invalid or carries a pending error. */
  bool BadSocket() const {
    if (sockfd == kInvalid) return true;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(sockfd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return true;
    return err != 0 && err != EINTR && err != EAGAIN;
  }
  void Close() {
    if (sockfd != kInvalid) {
      ::close(sockfd);
      sockfd = kInvalid;
    }
  }
};

class TCPSocket : public Socket {
 public:
  TCPSocket() = default;
  explicit TCPSocket(SockType fd) : Socket(fd) {}

  void Create(int family = AF_INET) {
    sockfd = ::socket(family, SOCK_STREAM, 0);
    if (sockfd == kInvalid) Error("socket");
  }
  bool Connect(const SockAddr& addr) { return ::connect(sockfd, addr.addr(), addr.len()) == 0; }
  void SetReuseAddr() {
    int one = 1;
    setsockopt(sockfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  }
  void SetNoDelay() {
    int one = 1;
    setsockopt(sockfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  /*! \return the port bound to, or -1. */
  int Bind(const SockAddr& addr) {
    if (::bind(sockfd, addr.addr(), addr.len()) != 0) return -1;
    SockAddr bound;
    if (getsockname(sockfd, bound.addr(), bound.mutable_len()) != 0) return -1;
    return bound.port();
  }
  void Listen(int backlog = 16) {
    if (::listen(sockfd, backlog) != 0) Error("listen");
  }
  TCPSocket Accept(SockAddr* peer = nullptr) {
    SockAddr tmp;
    SockAddr* p = peer ? peer : &tmp;
    SockType fd;
    do {
      fd = ::accept(sockfd, p->addr(), p->mutable_len());
    } while (fd == kInvalid && errno == EINTR);
    if (fd == kInvalid) Error("accept");
    return TCPSocket(fd);
  }
  /*! \return bytes sent, or -1 on error. */
  ssize_t Send(const void* buf, size_t len) {
    ssize_t n;
    do {
      n = ::send(sockfd, buf, len, MSG_NOSIGNAL);
    } while (n == -1 && errno == EINTR);
    return n;
  }
  /*! \return bytes received, 0 at end of stream, or -1 on error. */
  ssize_t Recv(void* buf, size_t len) {
    ssize_t n;
    do {
      n = ::recv(sockfd, buf, len, 0);
    } while (n == -1 && errno == EINTR);
    return n;
  }
  /*! \return len, or fewer bytes if the peer closed. Throws on errors. */
  size_t SendAll(const void* buf, size_t len) {
    const char* p = static_cast<const char*>(buf);
    size_t done = 0;
    while (done < len) {
      ssize_t n = Send(p + done, len - done);
      if (n == -1) Error("send");
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    return done;
  }
  size_t RecvAll(void* buf, size_t len) {
    char* p = static_cast<char*>(buf);
    size_t done = 0;
    while (done < len) {
      ssize_t n = Recv(p + done, len - done);
      if (n == -1) Error("recv");
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    return done;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_PATTERNS_SUPPORT_SOCKET_H_
