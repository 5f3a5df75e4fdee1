// braid._braid: the native layer of the Python SDK (client_sdk/python/braid), a thin pybind11
// binding of the C++ SDK (braid/agent_client.h, connection.h, transfer_session.h,
// notifications.h). The Python package builds the friendly API on top (futures, asyncio,
// iterators); this file only crosses the language boundary:
// - every call that may block (a gRPC call, a full window, a flush, a close) releases the GIL, so
//   the SDK's reader threads can run Python callbacks meanwhile;
// - completions do not take the GIL one by one (a thread that wants the GIL may wait for the
//   interpreter's switch interval, 5 ms): the session's reader queues them, and one dispatcher
//   thread per session hands each batch to Python in one call, with the GIL taken once;
// - a failed Status becomes braid.BraidError(code, code_name, message).
#include <fcntl.h>
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "braid/agent_client.h"
#include "braid/connection.h"
#include "braid/fork_guard.h"
#include "braid/notifications.h"
#include "braid/transfer_session.h"
#include "client_sdk/python/dispatcher.h"
#include "dataplane/common/named_thread.h"
#include "dataplane/common/unique_fd.h"
#include "dataplane/common/version.h"
#include "dataplane/session/session_client.h"

namespace py = pybind11;

namespace braid::client {
namespace {

using Millis = std::chrono::milliseconds;

// Raises braid.BraidError for a failed status.
[[noreturn]] void Raise(const Status& status) {
  py::object error_type = py::module_::import("braid._errors").attr("BraidError");
  py::object error =
      error_type(static_cast<int>(status.code()),
                 std::string(common::StatusCodeName(status.code())), std::string(status.message()));
  PyErr_SetObject(error_type.ptr(), error.ptr());
  throw py::error_already_set();
}

void Check(const Status& status) {
  if (!status.ok()) Raise(status);
}

template <typename T>
T Take(Result<T> result) {
  if (!result.ok()) Raise(result.status());
  return std::move(result).value();
}

// Runs `f` with the GIL let go (a call that may block), returning what it returns.
template <typename F>
auto WithoutGil(F&& f) {
  py::gil_scoped_release release;
  return f();
}

// Seconds from Python as milliseconds; a ValueError for a negative, infinite or NaN number (whose
// conversion to an integer would be undefined) or one past a billion seconds.
Millis Ms(double seconds) {
  if (!(seconds >= 0 && seconds <= 1e9)) {
    throw py::value_error("a timeout or deadline must be a number of seconds from 0 to 1e9, not " +
                          py::repr(py::float_(seconds)).cast<std::string>());
  }
  return Millis(static_cast<int64_t>(seconds * 1000.0));
}

TransferPath PathOf(const std::string& path) {
  if (path == "ring") return TransferPath::kRing;
  if (path == "grpc") return TransferPath::kGrpc;
  if (path != "auto") {
    throw py::value_error("path must be \"auto\", \"ring\" or \"grpc\", not \"" +
                          path.substr(0, 40) + "\"");
  }
  return TransferPath::kAuto;
}

v1::Scheme SchemeOf(const std::string& scheme) {
  if (scheme == "spray") return v1::SCHEME_SPRAY;
  if (scheme == "dqplb") return v1::SCHEME_DQPLB;
  throw py::value_error("scheme must be \"spray\" or \"dqplb\", not \"" + scheme.substr(0, 40) +
                        "\"");
}

py::dict InfoDict(const v1::AgentInfo& info) {
  py::dict d;
  d["agent_id"] = info.agent_id();
  d["version"] = info.version();
  d["provider"] = info.provider();
  d["control_endpoint"] = info.control_endpoint();
  d["caller_identity"] = info.caller_identity();
  d["caller_role"] = info.caller_role();
  return d;
}

py::dict VqpDict(const v1::VirtualQpInfo& v) {
  py::dict d;
  d["vqp_id"] = v.vqp_id();
  d["connected"] = v.connected();
  d["scheme"] = v1::Scheme_Name(v.scheme());
  d["num_qps"] = v.num_qps();
  d["healthy_data_qps"] = v.healthy_data_qps();
  d["label"] = v.label();
  return d;
}

// The SDK's operation as the Python layer hands it over.
struct PyOp {
  std::string op;  // "write", "read", "write_with_imm"
  uint64_t local_region;
  uint64_t local_offset;
  v1::RemoteRegion remote;
  uint64_t remote_offset;
  uint64_t length;
  uint32_t imm;
  double timeout;  // seconds; 0: the session's default
};

TransferOp ToOp(const PyOp& p) {
  TransferOp op;
  if (p.op == "write") {
    op.op = v1::OP_WRITE;
  } else if (p.op == "read") {
    op.op = v1::OP_READ;
  } else if (p.op == "write_with_imm") {
    op.op = v1::OP_WRITE_WITH_IMM;
  } else {
    throw py::value_error("op must be \"write\", \"read\" or \"write_with_imm\", not \"" +
                          p.op.substr(0, 40) + "\"");
  }
  op.local_region = p.local_region;
  op.local_offset = p.local_offset;
  op.remote = p.remote;
  op.remote_offset = p.remote_offset;
  op.length = p.length;
  op.imm = p.imm;
  op.timeout = Ms(p.timeout);
  return op;
}

// A TransferSession and its completion dispatcher; closing (which waits for what is in flight,
// then for the dispatcher to hand over the last completions) lets go of the GIL.
class PySession {
 public:
  PySession(std::unique_ptr<TransferSession> s, std::unique_ptr<Dispatcher> d)
      : dispatcher_(std::move(d)), session_(std::move(s)) {}
  ~PySession() { Close(); }
  void Close() {
    py::gil_scoped_release release;
    session_.reset();
    dispatcher_.reset();
  }
  Dispatcher& dispatcher() { return *dispatcher_; }
  TransferSession& get() {
    if (session_ == nullptr) throw py::value_error("the session is closed");
    return *session_;
  }

 private:
  std::unique_ptr<Dispatcher> dispatcher_;  // outlives the session, which calls it
  std::unique_ptr<TransferSession> session_;
};

// The caller's own memory registered where it lies (RegisterFd over a local session of the
// agent, doc/local_data_path.md). The regions live until deregistered or until this connection
// closes.
class PyFdRegistrar {
 public:
  explicit PyFdRegistrar(const std::shared_ptr<AgentClient>& agent) {
    const std::string socket = agent->SessionSocket();
    if (socket.empty()) {
      Raise(Status::FailedPrecondition(
          "agent " + agent->target() +
          " is not reached over a Unix socket: only a local agent can register this process's "
          "own memory (use Agent.alloc)"));
    }
    client_ = Take(WithoutGil([&] { return session::SessionClient::Connect(socket, {2, 2, 2}); }));
  }
  uint64_t Register(int fd, uint64_t offset, uint64_t length, const std::vector<uint64_t>& grant,
                    const std::string& label) {
    return Take(WithoutGil([&] { return client_->RegisterFd(fd, offset, length, grant, label); }));
  }

 private:
  std::unique_ptr<session::SessionClient> client_;
};

// Memory of this process for a local agent: a sealed memfd mapped here and registered where it
// lies through `registrar` (RegisterFd), so the NIC reads and writes these very pages. Exposes the
// buffer protocol (numpy views it with no copy). Deregistered, then unmapped, when destroyed.
class PyMemfdBuffer {
 public:
  PyMemfdBuffer(std::shared_ptr<AgentClient> agent, std::shared_ptr<PyFdRegistrar> registrar,
                uint64_t nbytes, const std::vector<uint64_t>& grant, const std::string& label)
      : agent_(std::move(agent)), registrar_(std::move(registrar)), size_(nbytes) {
    if (nbytes == 0) throw py::value_error("nbytes must be at least 1");
    fd_ = common::UniqueFd(memfd_create("braid-buffer", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd_.valid()) Raise(Status::FromErrno(errno, "memfd_create"));
    if (ftruncate(fd_.get(), static_cast<off_t>(nbytes)) != 0 ||
        fcntl(fd_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
      Raise(Status::FromErrno(
          errno, "sizing and sealing a memfd of " + std::to_string(nbytes) + " bytes"));
    }
    void* p = mmap(nullptr, nbytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    if (p == MAP_FAILED) Raise(Status::FromErrno(errno, "mmap of a memfd"));
    data_ = static_cast<uint8_t*>(p);
    id_ = registrar_->Register(fd_.get(), 0, nbytes, grant, label);
    for (uint64_t vqp : grant) Grant(vqp);  // what each peer targets, kept (remote() asks no one)
  }
  ~PyMemfdBuffer() {
    if (id_ != 0) {
      py::gil_scoped_release release;
      (void)agent_->DeregisterMemory(id_);  // best effort: the session's end deregisters it too
    }
    if (data_ != nullptr) munmap(data_, size_);
  }
  PyMemfdBuffer(const PyMemfdBuffer&) = delete;
  PyMemfdBuffer& operator=(const PyMemfdBuffer&) = delete;

  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  uint64_t id() const { return id_; }
  // Lets VQP `vqp_id` reach this memory; returns what its peer targets. Idempotent.
  v1::RemoteRegion Grant(uint64_t vqp_id) {
    auto it = remotes_.find(vqp_id);
    if (it != remotes_.end()) return it->second;
    v1::RemoteRegion r = Take(WithoutGil([&] { return agent_->GrantAccess(id_, vqp_id); }));
    remotes_[vqp_id] = r;
    return r;
  }
  // What the peer of `vqp_id` targets; None unless that VQP was granted.
  py::object Remote(uint64_t vqp_id) const {
    auto it = remotes_.find(vqp_id);
    return it == remotes_.end() ? py::none() : py::cast(it->second);
  }

 private:
  std::shared_ptr<AgentClient> agent_;
  std::shared_ptr<PyFdRegistrar> registrar_;  // its session holds the registration
  common::UniqueFd fd_;
  uint8_t* data_ = nullptr;
  uint64_t size_;
  uint64_t id_ = 0;
  std::map<uint64_t, v1::RemoteRegion> remotes_;  // by granted VQP
};

// A Connection whose destruction (two gRPC calls) lets go of the GIL.
class PyConnection {
 public:
  explicit PyConnection(std::unique_ptr<Connection> c) : connection_(std::move(c)) {}
  ~PyConnection() { Close(); }
  void Close() {
    py::gil_scoped_release release;
    connection_.reset();
  }
  Connection& get() {
    if (connection_ == nullptr) throw py::value_error("the connection is closed");
    return *connection_;
  }

 private:
  std::unique_ptr<Connection> connection_;
};

// Notifications queued by the stream's thread for Python to take (no GIL on the stream's thread).
class PyNotifications {
 public:
  static std::unique_ptr<PyNotifications> Open(const std::shared_ptr<AgentClient>& agent,
                                               uint64_t vqp_id, const std::string& path,
                                               uint32_t ring_entries) {
    auto out = std::make_unique<PyNotifications>();
    PyNotifications* self = out.get();
    NotificationOptions options;
    options.path = PathOf(path);
    options.ring_entries = ring_entries;
    auto on_note = [self](const v1::Notification& n) {
      {
        std::lock_guard<std::mutex> lock(self->mu_);
        self->queue_.push_back(n);
      }
      self->cv_.notify_one();
    };
    auto stream =
        WithoutGil([&] { return NotificationStream::Open(agent, vqp_id, on_note, options); });
    out->stream_ = Take(std::move(stream));
    return out;
  }
  ~PyNotifications() {
    Close();
    if (fork_.Inherited()) ForkGuard::ForgetWaiters(cv_);  // a parent's Next()
  }
  void Close() {
    py::gil_scoped_release release;
    stream_.reset();
  }
  // The next notification as (vqp_id, seq, imm, byte_len, wc_status); None after `timeout`
  // seconds, or when the stream ended with nothing left (ended() then says so).
  py::object Next(double timeout) {
    v1::Notification n;
    bool got = false;
    const Millis wait = Ms(timeout);  // raises with the GIL held
    {
      py::gil_scoped_release release;
      std::unique_lock<std::mutex> lock(mu_);
      const auto give_up = std::chrono::steady_clock::now() + wait;
      while (queue_.empty() && !(stream_ == nullptr || stream_->ended())) {
        // The stream's end does not signal this condition: look again every 10 ms.
        if (cv_.wait_until(lock, std::min(give_up, std::chrono::steady_clock::now() +
                                                       Millis(10))) == std::cv_status::timeout &&
            std::chrono::steady_clock::now() >= give_up) {
          break;
        }
      }
      if (!queue_.empty()) {
        n = std::move(queue_.front());
        queue_.pop_front();
        got = true;
      }
    }
    if (!got) return py::none();
    return py::make_tuple(n.vqp_id(), n.seq(), n.imm(), n.byte_len(), n.wc_status());
  }
  bool Ended() {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.empty() && (stream_ == nullptr || stream_->ended());
  }
  // How it ended (raises for an error); None while it runs or after a clean end.
  void RaiseIfFailed() {
    if (stream_ != nullptr) Check(stream_->status());
  }
  std::string Path() const { return stream_ != nullptr ? stream_->path() : "closed"; }

 private:
  std::unique_ptr<NotificationStream> stream_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::Notification> queue_;  // guarded by mu_
  ForkGuard fork_;
};

}  // namespace
}  // namespace braid::client

PYBIND11_MODULE(_braid, m) {
  using namespace braid::client;
  namespace v1 = braid::v1;
  m.doc() = "Native layer of the braid Python SDK (use the braid package).";
  m.attr("__version__") = braid::common::kVersion;
  {
    py::dict codes;  // every StatusCode by name ("NotFound": 4, ...)
    for (int c = 0; c <= static_cast<int>(braid::common::StatusCode::kInternal); ++c) {
      codes[py::str(std::string(
          braid::common::StatusCodeName(static_cast<braid::common::StatusCode>(c))))] = c;
    }
    m.attr("STATUS_CODES") = codes;
  }
  m.def("status_name", [](int code) {
    return std::string(braid::common::StatusCodeName(static_cast<braid::common::StatusCode>(code)));
  });

  py::class_<v1::RemoteRegion>(
      m, "RemoteRegion",
      "A peer's region as granted to one VQP: what a write or read "
      "targets. Opaque; to_bytes()/from_bytes() carry it between processes.")
      .def_property_readonly("region_id", &v1::RemoteRegion::region_id)
      .def_property_readonly("vqp_id", &v1::RemoteRegion::vqp_id)
      .def_property_readonly("length", &v1::RemoteRegion::length)
      .def_property_readonly("agent_id", &v1::RemoteRegion::agent_id)
      .def("to_bytes", [](const v1::RemoteRegion& r) { return py::bytes(r.SerializeAsString()); })
      .def_static("from_bytes",
                  [](const py::bytes& b) {
                    v1::RemoteRegion r;
                    if (!r.ParseFromString(std::string(b))) {
                      throw py::value_error("not a serialized RemoteRegion");
                    }
                    return r;
                  })
      .def("__repr__", [](const v1::RemoteRegion& r) {
        return "RemoteRegion(region_id=" + std::to_string(r.region_id()) +
               ", vqp_id=" + std::to_string(r.vqp_id()) + ", length=" + std::to_string(r.length()) +
               ", agent_id='" + r.agent_id() + "')";
      });

  py::class_<Region>(m, "Region", py::buffer_protocol())
      .def_buffer([](Region& r) {
        return py::buffer_info(r.data(), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(r.size())}, {1});
      })
      .def_property_readonly("id", &Region::id)
      .def_property_readonly("nbytes", &Region::size)
      .def_property_readonly("address",
                             [](const Region& r) { return reinterpret_cast<uintptr_t>(r.data()); })
      .def(
          "remote",
          [](const Region& r, uint64_t vqp_id) -> py::object {
            const v1::RemoteRegion* remote = r.remote(vqp_id);
            if (remote == nullptr) return py::none();
            return py::cast(*remote);
          },
          py::arg("vqp_id"))
      .def(
          "grant",
          [](Region& r, uint64_t vqp_id) {
            auto out = WithoutGil([&] { return r.Grant(vqp_id); });
            return Take(std::move(out));
          },
          py::arg("vqp_id"))
      .def(
          "revoke",
          [](Region& r, uint64_t vqp_id) { Check(WithoutGil([&] { return r.Revoke(vqp_id); })); },
          py::arg("vqp_id"));

  py::class_<AgentClient, std::shared_ptr<AgentClient>>(m, "AgentClient")
      .def(py::init([](const std::string& target, const std::string& tls_ca,
                       const std::string& tls_cert, const std::string& tls_key,
                       const std::string& token, double call_timeout, double connect_timeout,
                       bool hold) {
             ClientOptions o;
             o.hold = hold;
             o.tls_ca = tls_ca;
             o.tls_cert = tls_cert;
             o.tls_key = tls_key;
             o.token = token;
             o.call_timeout = Ms(call_timeout);
             o.connect_timeout = Ms(connect_timeout);
             auto out = WithoutGil([&] { return AgentClient::Open(target, o); });
             return Take(std::move(out));
           }),
           py::arg("target"), py::arg("tls_ca") = "", py::arg("tls_cert") = "",
           py::arg("tls_key") = "", py::arg("token") = "", py::arg("call_timeout") = 10.0,
           py::arg("connect_timeout") = 10.0, py::arg("hold") = false)
      .def_property_readonly("target", &AgentClient::target)
      .def_property_readonly("lease", &AgentClient::lease)
      .def("end_hold", [](AgentClient& a) { Check(WithoutGil([&] { return a.EndHold(); })); })
      .def("info",
           [](AgentClient& a) {
             auto out = WithoutGil([&] { return a.GetInfo(); });
             return InfoDict(Take(std::move(out)));
           })
      .def(
          "serving",
          [](AgentClient& a, const std::string& service) {
            auto out = WithoutGil([&] { return a.Serving(service); });
            return Take(std::move(out));
          },
          py::arg("service") = "")
      .def("list_vqps",
           [](AgentClient& a) {
             auto out = WithoutGil([&] { return a.ListVqps(); });
             py::list l;
             for (const auto& v : Take(std::move(out))) l.append(VqpDict(v));
             return l;
           })
      .def("list_regions",
           [](AgentClient& a) {
             auto out = WithoutGil([&] { return a.ListRegions(); });
             py::list l;
             for (const auto& r : Take(std::move(out))) l.append(r.region_id());
             return l;
           })
      .def("deregister_memory",
           [](AgentClient& a, uint64_t region_id) {
             Check(WithoutGil([&] { return a.DeregisterMemory(region_id); }));
           })
      .def("grant_access",
           [](AgentClient& a, uint64_t region_id, uint64_t vqp_id) {
             return Take(WithoutGil([&] { return a.GrantAccess(region_id, vqp_id); }));
           })
      .def("destroy_vqp",
           [](AgentClient& a, uint64_t vqp_id) {
             Check(WithoutGil([&] { return a.DestroyVqp(vqp_id); }));
           })
      .def(
          "register_memory",
          [](const std::shared_ptr<AgentClient>& a, uint64_t nbytes, const std::string& label,
             const std::vector<uint64_t>& grant) {
            auto out = WithoutGil([&] { return a->RegisterMemory(nbytes, label, grant); });
            return Take(std::move(out));
          },
          py::arg("nbytes"), py::arg("label") = "", py::arg("grant") = std::vector<uint64_t>{});

  py::class_<PyConnection>(m, "Connection")
      .def_property_readonly("vqp_a", [](PyConnection& c) { return c.get().vqp_a(); })
      .def_property_readonly("vqp_b", [](PyConnection& c) { return c.get().vqp_b(); })
      .def("release", [](PyConnection& c) { c.get().Release(); })
      .def("close", &PyConnection::Close, "Destroys both VQPs now (unless released).");
  m.def(
      "connect",
      [](const std::shared_ptr<AgentClient>& a, const std::shared_ptr<AgentClient>& b, uint32_t qps,
         const std::string& scheme, const std::vector<std::string>& devices,
         const std::string& label) {
        VqpOptions o;
        o.num_qps = qps;
        o.scheme = SchemeOf(scheme);
        o.devices = devices;
        o.label = label;
        auto out = WithoutGil([&] { return Connect(a, b, o); });
        return std::make_unique<PyConnection>(Take(std::move(out)));
      },
      py::arg("a"), py::arg("b"), py::arg("qps") = 8, py::arg("scheme") = "spray",
      py::arg("devices") = std::vector<std::string>{}, py::arg("label") = "");

  py::class_<PyOp>(m, "Op").def(py::init<std::string, uint64_t, uint64_t, v1::RemoteRegion,
                                         uint64_t, uint64_t, uint32_t, double>(),
                                py::arg("op"), py::arg("local_region"), py::arg("local_offset"),
                                py::arg("remote"), py::arg("remote_offset"), py::arg("length"),
                                py::arg("imm") = 0, py::arg("timeout") = 0.0);

  py::class_<PySession>(m, "Session")
      .def(py::init([](const std::shared_ptr<AgentClient>& agent, uint64_t vqp_id,
                       py::function deliver, const std::string& path, uint32_t ring_entries,
                       bool busy_poll, double default_timeout, uint32_t max_in_flight) {
             SessionOptions o;
             o.path = PathOf(path);
             o.ring_entries = ring_entries;
             o.busy_poll = busy_poll;
             o.default_timeout = Ms(default_timeout);
             o.max_in_flight = max_in_flight;
             auto out = WithoutGil([&] { return TransferSession::Open(agent, vqp_id, o); });
             return std::make_unique<PySession>(Take(std::move(out)),
                                                std::make_unique<Dispatcher>(std::move(deliver)));
           }),
           py::arg("agent"), py::arg("vqp_id"), py::arg("deliver"), py::arg("path") = "auto",
           py::arg("ring_entries") = 1024, py::arg("busy_poll") = false,
           py::arg("default_timeout") = 30.0, py::arg("max_in_flight") = 0)
      .def_property_readonly("path", [](PySession& s) { return std::string(s.get().path()); })
      .def_property_readonly("window", [](PySession& s) { return s.get().window(); })
      .def_property_readonly("outstanding", [](PySession& s) { return s.get().outstanding(); })
      .def(
          "submit",
          [](PySession& s, const PyOp& op, uint64_t token) {
            TransferOp t = ToOp(op);
            TransferSession& session = s.get();
            auto done = s.dispatcher().For(token);
            py::gil_scoped_release release;
            session.Submit(t, std::move(done));
          },
          "Submits `op`; its completion reaches `deliver` with `token`.")
      .def(
          "submit_batch",
          [](PySession& s, const std::vector<PyOp>& ops, uint64_t first_token) {
            std::vector<TransferOp> batch;
            batch.reserve(ops.size());
            for (const PyOp& op : ops) batch.push_back(ToOp(op));
            TransferSession& session = s.get();
            Dispatcher& d = s.dispatcher();
            py::gil_scoped_release release;
            session.SubmitBatch(batch,
                                [&d, first_token](size_t i) { return d.For(first_token + i); });
          },
          "Submits `ops`; the completion of ops[i] reaches `deliver` with `first_token + i`.")
      .def("flush",
           [](PySession& s, double timeout) {
             TransferSession& session = s.get();  // raises with the GIL held
             const Millis wait = Ms(timeout);
             Check(WithoutGil([&] { return session.Flush(wait); }));
           })
      .def("cancel",
           [](PySession& s) {
             TransferSession& session = s.get();
             py::gil_scoped_release release;
             session.Cancel();
           })
      .def("cancel_and_wait",
           [](PySession& s, double timeout) {
             TransferSession& session = s.get();
             const Millis wait = Ms(timeout);
             Check(WithoutGil([&] { return session.CancelAndWait(wait); }));
           })
      .def("close", &PySession::Close);

  py::class_<PyMemfdBuffer>(m, "MemfdBuffer", py::buffer_protocol())
      .def(py::init<std::shared_ptr<AgentClient>, std::shared_ptr<PyFdRegistrar>, uint64_t,
                    const std::vector<uint64_t>&, const std::string&>(),
           py::arg("agent"), py::arg("registrar"), py::arg("nbytes"), py::arg("grant"),
           py::arg("label"))
      .def_buffer([](PyMemfdBuffer& b) {
        return py::buffer_info(b.data(), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(b.size())}, {1});
      })
      .def_property_readonly("id", &PyMemfdBuffer::id)
      .def_property_readonly("nbytes", &PyMemfdBuffer::size)
      .def("grant", &PyMemfdBuffer::Grant, py::arg("vqp_id"))
      .def("remote", &PyMemfdBuffer::Remote, py::arg("vqp_id"));

  py::class_<PyFdRegistrar, std::shared_ptr<PyFdRegistrar>>(m, "FdRegistrar")
      .def(py::init<const std::shared_ptr<AgentClient>&>(), py::arg("agent"))
      .def("register", &PyFdRegistrar::Register, py::arg("fd"), py::arg("offset"),
           py::arg("length"), py::arg("grant"), py::arg("label"));

  py::class_<PyNotifications>(m, "Notifications")
      .def(py::init(&PyNotifications::Open), py::arg("agent"), py::arg("vqp_id"),
           py::arg("path") = "auto", py::arg("ring_entries") = 16384)
      .def("next", &PyNotifications::Next, py::arg("timeout"))
      .def("ended", &PyNotifications::Ended)
      .def("raise_if_failed", &PyNotifications::RaiseIfFailed)
      .def_property_readonly("path", &PyNotifications::Path)
      .def("close", &PyNotifications::Close);
}
