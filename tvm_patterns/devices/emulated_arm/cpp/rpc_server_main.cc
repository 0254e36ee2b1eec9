/*
 * tvm-patterns: a TVM RPC server program for the TVM runtime built from the wheels' sources.
 *
 * It speaks the same protocol as `python -m tvm.exec.rpc_server`: listen on a TCP port, optionally
 * register with an RPC tracker under a key, accept a client whose handshake carries the expected
 * key, and serve the session through the runtime's RPC endpoint (RPCServerLoop). Each session runs
 * in a forked child with its own work directory (uploads land there), so a crashing kernel ends
 * the session, not the server; a client's "-timeout=S" option bounds the session.
 *
 * Linked with -rdynamic against the runtime objects so that uploaded libraries resolve the
 * runtime's symbols (TVMFFI*, TVMBackend*) from this executable.
 *
 * usage: tvm_rpc_server [--host H] [--port P] [--tracker H:P] [--key K] [--custom-addr A]
 *                       [--work-dir D]
 * On start it prints "listening <host>:<port>" on stdout (port 0 picks a free port).
 */
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/socket.h"

namespace tvm {
namespace runtime {
void RPCServerLoop(int sockfd);  // rpc_socket_impl.cc
}  // namespace runtime
}  // namespace tvm

namespace {

using tvm::support::SockAddr;
using tvm::support::TCPSocket;
namespace ffi = tvm::ffi;

constexpr int kRPCMagic = 0xff271;  // rpc_endpoint.h / tvm.rpc.base
constexpr int kRPCTrackerMagic = 0x2f271;
constexpr int kRPCSuccess = kRPCMagic + 0;
constexpr int kRPCMismatch = kRPCMagic + 2;

// tvm.rpc.base.TrackerCode
enum TrackerCode { kSuccess = 0, kPut = 3, kUpdateInfo = 5, kGetPendingMatchkeys = 7 };

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string tracker_host;
  int tracker_port = 0;
  std::string key;
  std::string custom_addr;
  std::string work_dir = "/tmp";
};

// The current session's work directory (set in the session's child process).
std::string g_session_dir;

void Log(const std::string& msg) {
  std::cerr << "[tvm-patterns rpc server] " << msg << std::endl;
}

[[noreturn]] void Usage(const char* prog) {
  std::cerr << "usage: " << prog
            << " [--host H] [--port P] [--tracker HOST:PORT] [--key K] [--custom-addr A]"
               " [--work-dir D]\n";
  std::exit(2);
}

Options ParseArgs(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(argv[0]);
      return argv[++i];
    };
    if (a == "--host") {
      opt.host = value();
    } else if (a == "--port") {
      opt.port = std::atoi(value().c_str());
    } else if (a == "--tracker") {
      std::string t = value();
      size_t colon = t.rfind(':');
      if (colon == std::string::npos) Usage(argv[0]);
      opt.tracker_host = t.substr(0, colon);
      opt.tracker_port = std::atoi(t.c_str() + colon + 1);
    } else if (a == "--key") {
      opt.key = value();
    } else if (a == "--custom-addr") {
      opt.custom_addr = value();
    } else if (a == "--work-dir") {
      opt.work_dir = value();
    } else {
      Usage(argv[0]);
    }
  }
  if (!opt.tracker_host.empty() && opt.key.empty()) {
    std::cerr << "--tracker needs --key\n";
    std::exit(2);
  }
  return opt;
}

// ---- the server environment the Python client expects (cf. tvm.rpc.server._server_env) ----

std::string WorkPath(const std::string& name) { return g_session_dir + "/" + name; }

void RegisterServerEnv() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("tvm.rpc.server.workpath", [](const std::string& name) { return WorkPath(name); })
      .def("tvm.rpc.server.load_module",
           [](const std::string& name) {
             std::string path = WorkPath(name);
             Log("load_module " + path);
             return ffi::Module::LoadFromFile(path);
           })
      .def("tvm.rpc.server.listdir", [](const std::string& name) {
        std::string dir = WorkPath(name);
        std::string out;
        if (DIR* d = opendir(dir.c_str())) {
          while (dirent* e = readdir(d)) {
            std::string n = e->d_name;
            if (n == "." || n == "..") continue;
            if (!out.empty()) out += ",";
            out += dir + "/" + n;
          }
          closedir(d);
        }
        return out;
      });
}

void RemoveTree(const std::string& path) {
  if (DIR* d = opendir(path.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n == "." || n == "..") continue;
      std::string p = path + "/" + n;
      struct stat st;
      if (lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
        RemoveTree(p);
      } else {
        unlink(p.c_str());
      }
    }
    closedir(d);
  }
  rmdir(path.c_str());
}

// ---- small socket helpers ----

void SendInt(TCPSocket* sock, int32_t v) {
  if (sock->SendAll(&v, sizeof(v)) != sizeof(v)) throw std::runtime_error("connection closed");
}

bool RecvInt(TCPSocket* sock, int32_t* v) { return sock->RecvAll(v, sizeof(*v)) == sizeof(*v); }

// tvm.rpc.base.sendjson / recvjson: int32 length + UTF-8 JSON.
void SendJSON(TCPSocket* sock, const ffi::Any& value) {
  std::string s = ffi::json::Stringify(value);
  SendInt(sock, static_cast<int32_t>(s.size()));
  if (sock->SendAll(s.data(), s.size()) != s.size()) throw std::runtime_error("connection closed");
}

ffi::Any RecvJSON(TCPSocket* sock) {
  int32_t n;
  if (!RecvInt(sock, &n) || n < 0) throw std::runtime_error("tracker connection closed");
  std::string s(static_cast<size_t>(n), '\0');
  if (sock->RecvAll(&s[0], s.size()) != s.size()) {
    throw std::runtime_error("tracker connection closed");
  }
  return ffi::json::Parse(s);
}

void ExpectSuccess(const ffi::Any& reply) {
  auto code = reply.try_cast<int64_t>();
  if (!code.has_value() || *code != kSuccess) {
    throw std::runtime_error("tracker refused: " + std::string(ffi::json::Stringify(reply)));
  }
}

// ---- tracker registration (cf. tvm.rpc.server._listen_loop) ----

class TrackerLink {
 public:
  TrackerLink(const Options& opt, int port) : opt_(opt), port_(port) {}

  bool enabled() const { return !opt_.tracker_host.empty(); }
  const std::string& matchkey() const { return matchkey_; }

  // Connect (with retries) and report this server's key and address.
  void Connect() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (true) {
      sock_ = TCPSocket();
      SockAddr addr(opt_.tracker_host.c_str(), opt_.tracker_port);
      sock_.Create(addr.ss_family());
      if (sock_.Connect(addr)) break;
      sock_.Close();
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("cannot connect to tracker " + addr.AsString());
      }
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    SendInt(&sock_, kRPCTrackerMagic);
    int32_t magic;
    if (!RecvInt(&sock_, &magic) || magic != kRPCTrackerMagic) {
      throw std::runtime_error("not an RPC tracker");
    }
    ffi::json::Object info;
    info.Set(ffi::String("key"), ffi::String("server:" + opt_.key));
    ffi::json::Array addr;
    if (opt_.custom_addr.empty()) {
      addr.push_back(ffi::Any(nullptr));
    } else {
      addr.push_back(ffi::String(opt_.custom_addr));
    }
    addr.push_back(static_cast<int64_t>(port_));
    info.Set(ffi::String("addr"), addr);
    SendJSON(&sock_, ffi::json::Array{static_cast<int64_t>(kUpdateInfo), info});
    ExpectSuccess(RecvJSON(&sock_));
  }

  // Offer this server under a fresh match key.
  void Put() {
    std::uniform_real_distribution<double> uni(0.0, 1.0);
    std::ostringstream os;
    os.precision(17);
    do {
      os.str("");
      os << opt_.key << ":" << uni(rng_);
    } while (used_keys_.count(os.str()));
    matchkey_ = os.str();
    used_keys_.insert(matchkey_);
    ffi::json::Array port_key{static_cast<int64_t>(port_), ffi::String(matchkey_)};
    ffi::Any custom = opt_.custom_addr.empty() ? ffi::Any(nullptr)
                                                : ffi::Any(ffi::String(opt_.custom_addr));
    SendJSON(&sock_, ffi::json::Array{static_cast<int64_t>(kPut), ffi::String(opt_.key), port_key,
                                      custom});
    ExpectSuccess(RecvJSON(&sock_));
    idle_checks_ = 0;
  }

  // Called when no client came for a while: a key taken by a client that never connected is
  // replaced, as the Python server does.
  void Ping(double period_s) {
    SendJSON(&sock_, ffi::json::Array{static_cast<int64_t>(kGetPendingMatchkeys)});
    ffi::Any pending = RecvJSON(&sock_);
    bool still_pending = false;
    if (auto arr = pending.try_cast<ffi::json::Array>()) {
      for (const ffi::Any& k : *arr) {
        auto s = k.try_cast<ffi::String>();
        if (s.has_value() && std::string(*s) == matchkey_) still_pending = true;
      }
    }
    idle_checks_ = still_pending ? 0 : idle_checks_ + 1;
    if (idle_checks_ * period_s > 4.0 + period_s) Put();
  }

  void Close() { sock_.Close(); }

 private:
  const Options& opt_;
  int port_;
  TCPSocket sock_;
  std::string matchkey_;
  std::set<std::string> used_keys_;
  std::mt19937_64 rng_{std::random_device{}()};
  int idle_checks_ = 0;
};

// ---- one session ----

struct Handshake {
  bool ok = false;
  double timeout_s = 0;  // 0: none
};

// Read the client's magic and key; answer it. The key is "client:<expected> [-timeout=S]".
Handshake DoHandshake(TCPSocket* conn, const std::string& expected_key,
                      const std::string& server_key) {
  Handshake hs;
  int32_t magic, keylen;
  if (!RecvInt(conn, &magic) || magic != kRPCMagic) return hs;
  if (!RecvInt(conn, &keylen) || keylen < 0 || keylen > (1 << 20)) return hs;
  std::string key(static_cast<size_t>(keylen), '\0');
  if (keylen != 0 && conn->RecvAll(&key[0], key.size()) != key.size()) return hs;
  std::istringstream words(key);
  std::string head, word;
  words >> head;
  if (head != "client:" + expected_key) {
    SendInt(conn, kRPCMismatch);
    Log("mismatched key " + key);
    return hs;
  }
  while (words >> word) {
    if (word.rfind("-timeout=", 0) == 0) hs.timeout_s = std::atof(word.c_str() + 9);
  }
  SendInt(conn, kRPCSuccess);
  SendInt(conn, static_cast<int32_t>(server_key.size()));
  conn->SendAll(server_key.data(), server_key.size());
  hs.ok = true;
  return hs;
}

// Serve one session in a child process; wait for it (killing it after timeout_s, if set).
void ServeSession(TCPSocket conn, const Options& opt, double timeout_s) {
  std::string tmpl = opt.work_dir + "/tvm-patterns-rpc-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    Log("cannot create a work directory under " + opt.work_dir);
    conn.Close();
    return;
  }
  std::string dir = buf.data();
  std::cout.flush();
  pid_t pid = fork();
  if (pid == 0) {
    g_session_dir = dir;
    if (chdir(dir.c_str()) != 0) _exit(1);
    int rc = 0;
    try {
      tvm::runtime::RPCServerLoop(conn.sockfd);
    } catch (const std::exception& e) {
      Log(std::string("session ended with an error: ") + e.what());
      rc = 1;
    }
    _exit(rc);
  }
  if (pid < 0) {
    Log("fork failed");
    conn.Close();
    RemoveTree(dir);
    return;
  }
  auto start = std::chrono::steady_clock::now();
  int status = 0;
  while (true) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (timeout_s > 0 && elapsed > timeout_s) {
      Log("session timed out, killing it");
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      // Tell the client why (as the Python server does).
      if (auto f = ffi::Function::GetGlobal("rpc.ReturnException")) {
        try {
          std::ostringstream msg;
          msg << "RPCSessionTimeoutError: Your " << timeout_s
              << "s session has expired, try to increase the \"session_timeout\" value.";
          (*f)(static_cast<int64_t>(conn.sockfd), ffi::String(msg.str()));
        } catch (...) {
        }
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (WIFSIGNALED(status)) Log("session process died with signal " + std::to_string(WTERMSIG(status)));
  conn.Close();
  RemoveTree(dir);
}

int Run(const Options& opt) {
  TCPSocket listener;
  SockAddr bind_addr(opt.host.c_str(), opt.port);
  listener.Create(bind_addr.ss_family());
  listener.SetReuseAddr();
  int port = listener.Bind(bind_addr);
  if (port < 0) {
    Log("cannot bind to " + bind_addr.AsString() + ": " + std::strerror(errno));
    return 1;
  }
  listener.Listen();
  std::cout << "listening " << opt.host << ":" << port << std::endl;

  TrackerLink tracker(opt, port);
  const std::string server_key = "server:" + opt.key;
  const double ping_period_s = 2.0;
  bool tracker_ready = false;
  while (true) {
    try {
      if (tracker.enabled() && !tracker_ready) {
        tracker.Connect();
        tracker.Put();
        tracker_ready = true;
        Log("registered with tracker " + opt.tracker_host + ":" +
            std::to_string(opt.tracker_port) + " as key " + opt.key);
      }
      pollfd pfd{listener.sockfd, POLLIN, 0};
      int ready = poll(&pfd, 1, static_cast<int>(ping_period_s * 1000));
      if (ready < 0 && errno != EINTR) tvm::support::Socket::Error("poll");
      if (ready <= 0) {
        if (tracker_ready) tracker.Ping(ping_period_s);
        continue;
      }
      SockAddr peer;
      TCPSocket conn = listener.Accept(&peer);
      conn.SetNoDelay();
      const std::string expected = tracker.enabled() ? tracker.matchkey() : opt.key;
      Handshake hs = DoHandshake(&conn, expected, server_key);
      if (!hs.ok) {
        conn.Close();
        continue;
      }
      Log("serving " + peer.AsString());
      ServeSession(conn, opt, hs.timeout_s);
      Log("finished " + peer.AsString());
      if (tracker_ready) tracker.Put();  // offer the server again under a new match key
    } catch (const std::exception& e) {
      Log(std::string("error: ") + e.what() + (tracker.enabled() ? "; reconnecting" : ""));
      if (tracker.enabled()) {
        tracker.Close();
        tracker_ready = false;
        std::this_thread::sleep_for(std::chrono::seconds(1));
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  Options opt = ParseArgs(argc, argv);
  RegisterServerEnv();
  return Run(opt);
}
