#include "braid/agent_client.h"

#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <sstream>
#include <thread>

#include "dataplane/common/memory_file.h"
#include "dataplane/common/quote.h"
#include "lease_holder.h"

namespace braid::client {

namespace {

// Entries asked for per list page: the most an agent gives (agent.proto, ListVirtualQpsRequest).
constexpr uint32_t kListPageSize = 1000;

// Every entry of a paged list: `page(request, &response)` asks for each page in turn, with the
// token the one before it ended with.
template <typename Request, typename Response, typename Page, typename Entry>
Result<std::vector<Entry>> WalkPages(
    Page&& page, google::protobuf::RepeatedPtrField<Entry>* (Response::*entries)()) {
  std::vector<Entry> all;
  Request request;
  request.set_page_size(kListPageSize);
  do {
    Response out;
    BRAID_RETURN_IF_ERROR(page(request, &out));
    google::protobuf::RepeatedPtrField<Entry>* got = (out.*entries)();
    std::move(got->begin(), got->end(), std::back_inserter(all));
    request.set_page_token(out.next_page_token());
  } while (!request.page_token().empty());
  return all;
}

common::StatusCode FromGrpcCode(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return common::StatusCode::kOk;
    case grpc::StatusCode::CANCELLED:
      return common::StatusCode::kCancelled;
    case grpc::StatusCode::INVALID_ARGUMENT:
      return common::StatusCode::kInvalidArgument;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return common::StatusCode::kDeadlineExceeded;
    case grpc::StatusCode::NOT_FOUND:
      return common::StatusCode::kNotFound;
    case grpc::StatusCode::ALREADY_EXISTS:
      return common::StatusCode::kAlreadyExists;
    case grpc::StatusCode::PERMISSION_DENIED:
      return common::StatusCode::kPermissionDenied;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return common::StatusCode::kNoResource;
    case grpc::StatusCode::FAILED_PRECONDITION:
      return common::StatusCode::kFailedPrecondition;
    case grpc::StatusCode::OUT_OF_RANGE:
      return common::StatusCode::kOutOfRange;
    case grpc::StatusCode::UNIMPLEMENTED:
      return common::StatusCode::kNotSupported;
    case grpc::StatusCode::UNAVAILABLE:
      return common::StatusCode::kIoError;
    default:
      return common::StatusCode::kInternal;
  }
}

Status Make(common::StatusCode code, const std::string& message) {
  switch (code) {
    case common::StatusCode::kOk:
      return Status::Ok();
    case common::StatusCode::kCancelled:
      return Status::Cancelled(message);
    case common::StatusCode::kInvalidArgument:
      return Status::InvalidArgument(message);
    case common::StatusCode::kDeadlineExceeded:
      return Status::DeadlineExceeded(message);
    case common::StatusCode::kNotFound:
      return Status::NotFound(message);
    case common::StatusCode::kAlreadyExists:
      return Status::AlreadyExists(message);
    case common::StatusCode::kPermissionDenied:
      return Status::PermissionDenied(message);
    case common::StatusCode::kFailedPrecondition:
      return Status::FailedPrecondition(message);
    case common::StatusCode::kOutOfRange:
      return Status::OutOfRange(message);
    case common::StatusCode::kNotSupported:
      return Status::NotSupported(message);
    case common::StatusCode::kIoError:
      return Status::IoError(message);
    case common::StatusCode::kNoResource:  // RESOURCE_EXHAUSTED says which limit
      return Status::NoResource(message);
    default:
      return Status::Internal(message);
  }
}

}  // namespace

Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return Status::Ok();
  return Make(FromGrpcCode(status.error_code()), status.error_message());
}

AgentClient::AgentClient(std::string target, ClientOptions options,
                         std::shared_ptr<grpc::Channel> channel)
    : target_(std::move(target)),
      options_(options),
      channel_(std::move(channel)),
      stub_(v1::Agent::NewStub(channel_)) {}

AgentClient::~AgentClient() {
  if (!fork_.Inherited()) return;
  ForkGuard::Abandon(std::move(hold_));  // its call stayed in the parent
  ForkGuard::Abandon(std::move(stub_));
  ForkGuard::Abandon(std::move(channel_));
}

Status AgentClient::Usable() const {
  if (!fork_.Inherited()) return Status::Ok();
  return fork_.Refusal("the connection to agent " + target_);
}

namespace {

Result<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return Status::InvalidArgument(std::string("cannot read the ") + what + " " + path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

Result<std::shared_ptr<grpc::ChannelCredentials>> Credentials(const ClientOptions& o) {
  const bool tls = !o.tls_ca.empty() || !o.tls_cert.empty() || !o.tls_key.empty();
  if (!tls) {
    if (!o.token.empty()) {
      return Status::InvalidArgument("a token is sent only over TLS: give the CA bundle as well");
    }
    return grpc::InsecureChannelCredentials();
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return Status::InvalidArgument("a client certificate needs both tls_cert and tls_key");
  }
  grpc::SslCredentialsOptions ssl;
  if (!o.tls_ca.empty()) {
    BRAID_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(o.tls_ca, "CA bundle"));
  }
  if (!o.tls_cert.empty()) {
    BRAID_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPem(o.tls_cert, "certificate"));
    BRAID_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPem(o.tls_key, "private key"));
  }
  auto creds = grpc::SslCredentials(ssl);
  if (!o.token.empty()) {
    creds = grpc::CompositeChannelCredentials(creds, grpc::AccessTokenCredentials(o.token));
  }
  return creds;
}

// An address that cannot reach an agent, refused before waiting for one: the wait would end in a
// bare "Deadline Exceeded" (a port of 99999, a socket path with nothing there) or in gRPC's own
// complaints on stderr (an empty target). Targets with a gRPC scheme (dns:, ipv4:, ...) pass.
Status CheckTarget(const std::string& target) {
  const std::string quoted = common::Quote(target);
  if (target.empty()) {
    return Status::InvalidArgument("no agent address: give host:port or unix:/path/to/socket");
  }
  if (target.rfind("unix:", 0) == 0) {
    std::string path = target.substr(5);
    if (path.rfind("//", 0) == 0) path = path.substr(2);  // unix:///abs
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) {
      return Status::NotFound("no Unix socket at " + common::Quote(path) + " (" +
                              std::strerror(errno) +
                              "): is the agent running, and is this its listen.unix path?");
    }
    if (!S_ISSOCK(st.st_mode)) {
      return Status::InvalidArgument(common::Quote(path) +
                                     " is not a socket: give the agent's "
                                     "listen.unix path");
    }
    return Status::Ok();
  }
  for (const char* scheme : {"dns:", "ipv4:", "ipv6:", "unix-abstract:", "vsock:"}) {
    if (target.rfind(scheme, 0) == 0) return Status::Ok();
  }
  // A URL (http://, https://, grpc://): gRPC would read the scheme as a name to resolve.
  if (const size_t scheme = target.find("://"); scheme != std::string::npos) {
    return Status::InvalidArgument("agent address " + quoted +
                                   " is a URL: give host:port (e.g. 10.0.0.5:7600, TLS set with "
                                   "its own options) or unix:/path");
  }
  const size_t colon = target.rfind(':');
  const std::string host = colon == std::string::npos ? target : target.substr(0, colon);
  const std::string port = colon == std::string::npos ? "" : target.substr(colon + 1);
  if (host.empty() || port.empty()) {
    return Status::InvalidArgument("agent address " + quoted +
                                   " is not host:port (e.g. 10.0.0.5:7600) or unix:/path");
  }
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return Status::InvalidArgument("agent address " + quoted +
                                   ": put an IPv6 address in brackets, [addr]:port");
  }
  const bool digits = port.size() <= 5 && std::all_of(port.begin(), port.end(),
                                                      [](char c) { return c >= '0' && c <= '9'; });
  if (!digits || std::stoul(port) == 0 || std::stoul(port) > 65535) {
    return Status::InvalidArgument("agent address " + quoted + ": the port must be 1 to 65535");
  }
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<AgentClient>> AgentClient::Open(const std::string& target,
                                                       ClientOptions options) {
  BRAID_RETURN_IF_ERROR(CheckTarget(target));
  BRAID_RETURN_IF_ERROR(ForkGuard::CheckOpen(target));
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetMaxReceiveMessageSize(64 << 20);
  BRAID_ASSIGN_OR_RETURN(auto credentials, Credentials(options));
  auto channel = grpc::CreateCustomChannel(target, credentials, args);
  auto client = std::make_shared<AgentClient>(target, options, channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + options.connect_timeout);
  ctx.set_wait_for_ready(true);
  const grpc::Status s = client->stub_->GetInfo(&ctx, {}, &client->info_);
  if (!s.ok()) {
    if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return Status::IoError(
          "agent " + target + " did not answer within " +
          std::to_string(options.connect_timeout.count()) +
          " ms: is it running and serving this address, with TLS settings that match it (a CA "
          "for a TLS agent, none for a plaintext one)?");
    }
    return Status::IoError("agent " + target + " did not answer: " + s.error_message());
  }
  if (options.hold) {
    BRAID_ASSIGN_OR_RETURN(client->hold_,
                           LeaseHolder::Open(*client->stub_, target, options.connect_timeout));
  }
  return client;
}

uint64_t AgentClient::lease() const { return hold_ ? hold_->lease() : 0; }

Status AgentClient::EndHold() {
  if (!hold_) return Status::Ok();
  BRAID_RETURN_IF_ERROR(Usable());
  return hold_->End(options_.call_timeout);
}

Result<uint64_t> AgentClient::HeldLease() const {
  if (!hold_) return uint64_t{0};
  BRAID_RETURN_IF_ERROR(Usable());  // before the holder's lock, which the parent may hold
  BRAID_RETURN_IF_ERROR(hold_->Ended());
  return hold_->lease();
}

void AgentClient::Prepare(grpc::ClientContext& context) const {
  context.set_deadline(std::chrono::system_clock::now() + options_.call_timeout);
}

Status AgentClient::CallFailed(const char* method, const grpc::Status& status) const {
  if (status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) return FromGrpc(status);
  return Status::DeadlineExceeded(
      std::string(method) + " on " + target_ + " got no answer within " +
      std::to_string(options_.call_timeout.count()) +
      " ms (ClientOptions::call_timeout): the agent may be overloaded or stalled, or the call "
      "slow (a large region's pages are taken when it is registered)");
}

// One unary call: this process's client, deadline, call, map the status.
#define BRAID_UNARY(Method, request, response)                     \
  BRAID_RETURN_IF_ERROR(Usable());                                 \
  grpc::ClientContext ctx;                                         \
  Prepare(ctx);                                                    \
  const grpc::Status gs = stub_->Method(&ctx, request, &response); \
  if (!gs.ok()) return CallFailed(#Method, gs)

std::string AgentClient::SessionSocket() const {
  constexpr std::string_view kUnix = "unix:";
  if (target_.rfind(kUnix, 0) != 0) return "";
  return target_.substr(kUnix.size()) + ".session";
}

Result<bool> AgentClient::UseSession(TransferPath path) const {
  const std::string socket = SessionSocket();
  switch (path) {
    case TransferPath::kGrpc:
      return false;
    case TransferPath::kRing:
      if (socket.empty()) {
        return Status::FailedPrecondition("agent " + target_ +
                                          " is not reached over a Unix socket: no local session "
                                          "(use TransferPath::kGrpc or kAuto)");
      }
      return true;
    case TransferPath::kAuto:
      break;
  }
  std::error_code ec;
  return !socket.empty() && std::filesystem::exists(socket, ec);
}

Result<v1::AgentInfo> AgentClient::GetInfo() {
  v1::AgentInfo out;
  BRAID_UNARY(GetInfo, v1::GetInfoRequest(), out);
  return out;
}

Result<std::vector<v1::Device>> AgentClient::ListDevices() {
  v1::ListDevicesResponse out;
  BRAID_UNARY(ListDevices, v1::ListDevicesRequest(), out);
  return std::vector<v1::Device>(out.devices().begin(), out.devices().end());
}

Result<v1::VirtualQpInfo> AgentClient::CreateVqp(const VqpOptions& options) {
  v1::CreateVirtualQpRequest request;
  request.set_scheme(options.scheme);
  request.set_num_qps(options.num_qps);
  for (const auto& d : options.devices) request.add_devices(d);
  request.set_fragment_size(options.fragment_size);
  request.set_label(options.label);
  BRAID_ASSIGN_OR_RETURN(const uint64_t lease, HeldLease());
  request.set_lease_id(lease);
  v1::VirtualQpInfo out;
  BRAID_UNARY(CreateVirtualQp, request, out);
  return out;
}

Result<v1::VirtualQpInfo> AgentClient::ConnectVqp(uint64_t vqp_id,
                                                  const v1::BusinessCard& remote_card) {
  v1::ConnectVirtualQpRequest request;
  request.set_vqp_id(vqp_id);
  *request.mutable_remote_card() = remote_card;
  v1::VirtualQpInfo out;
  BRAID_UNARY(ConnectVirtualQp, request, out);
  return out;
}

Result<v1::VirtualQpInfo> AgentClient::GetVqp(uint64_t vqp_id) {
  v1::GetVirtualQpRequest request;
  request.set_vqp_id(vqp_id);
  v1::VirtualQpInfo out;
  BRAID_UNARY(GetVirtualQp, request, out);
  return out;
}

Result<std::vector<v1::VirtualQpInfo>> AgentClient::ListVqps() {
  return WalkPages<v1::ListVirtualQpsRequest, v1::ListVirtualQpsResponse>(
      [this](const v1::ListVirtualQpsRequest& request, v1::ListVirtualQpsResponse* out) {
        BRAID_UNARY(ListVirtualQps, request, *out);
        return Status::Ok();
      },
      &v1::ListVirtualQpsResponse::mutable_vqps);
}

Status AgentClient::DestroyVqp(uint64_t vqp_id) {
  v1::DestroyVirtualQpRequest request;
  request.set_vqp_id(vqp_id);
  v1::DestroyVirtualQpResponse out;
  BRAID_UNARY(DestroyVirtualQp, request, out);
  return Status::Ok();
}

Result<std::unique_ptr<Region>> AgentClient::RegisterMemory(
    uint64_t length, const std::string& label, const std::vector<uint64_t>& grant_vqps) {
  v1::RegisterMemoryRequest request;
  request.set_length(length);
  request.set_label(label);
  for (uint64_t v : grant_vqps) request.add_grant_vqp_ids(v);
  BRAID_ASSIGN_OR_RETURN(const uint64_t lease, HeldLease());
  request.set_lease_id(lease);
  v1::RegionInfo out;
  BRAID_UNARY(RegisterMemory, request, out);
  const int fd = open(out.path().c_str(), O_RDWR | O_CLOEXEC);
  // Unmapped in whole pages of its file system (common::WholePages).
  struct statfs fs {};
  void* addr = fd < 0 || fstatfs(fd, &fs) != 0
                   ? MAP_FAILED
                   : mmap(nullptr, out.length(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  if (fd >= 0) close(fd);
  if (addr == MAP_FAILED) {
    (void)DeregisterMemory(out.region_id());
    return Status::FromErrno(err,
                             "map region file " + out.path() + " (is the agent on this host?)");
  }
  const uint64_t mapped = common::WholePages(out.length(), static_cast<uint64_t>(fs.f_bsize));
  return std::unique_ptr<Region>(
      new Region(shared_from_this(), std::move(out), static_cast<uint8_t*>(addr), mapped));
}

Result<v1::RemoteRegion> AgentClient::GrantAccess(uint64_t region_id, uint64_t vqp_id) {
  v1::GrantAccessRequest request;
  request.set_region_id(region_id);
  request.set_vqp_id(vqp_id);
  v1::RemoteRegion out;
  BRAID_UNARY(GrantAccess, request, out);
  return out;
}

Result<uint32_t> AgentClient::BindRemote(uint64_t session_id, uint64_t vqp_id,
                                         const v1::RemoteRegion& remote) {
  v1::BindRemoteRequest request;
  request.set_session_id(session_id);
  request.set_vqp_id(vqp_id);
  *request.mutable_remote() = remote;
  v1::BindRemoteResponse out;
  BRAID_UNARY(BindRemote, request, out);
  return out.handle();
}

Status AgentClient::RevokeAccess(uint64_t region_id, uint64_t vqp_id) {
  v1::RevokeAccessRequest request;
  request.set_region_id(region_id);
  request.set_vqp_id(vqp_id);
  v1::RevokeAccessResponse out;
  BRAID_UNARY(RevokeAccess, request, out);
  return Status::Ok();
}

const v1::RemoteRegion* Region::remote(uint64_t vqp_id) const {
  for (const v1::RemoteRegion& g : info_.grants()) {
    if (g.vqp_id() == vqp_id) return &g;
  }
  return nullptr;
}

Result<v1::RemoteRegion> Region::Grant(uint64_t vqp_id) {
  if (const v1::RemoteRegion* known = remote(vqp_id)) return *known;
  BRAID_ASSIGN_OR_RETURN(v1::RemoteRegion grant, owner_->GrantAccess(id(), vqp_id));
  *info_.add_grants() = grant;
  return grant;
}

Status Region::Revoke(uint64_t vqp_id) {
  BRAID_RETURN_IF_ERROR(owner_->RevokeAccess(id(), vqp_id));
  auto* grants = info_.mutable_grants();
  for (int i = 0; i < grants->size(); ++i) {
    if (grants->Get(i).vqp_id() == vqp_id) {
      grants->DeleteSubrange(i, 1);
      break;
    }
  }
  return Status::Ok();
}

Result<std::vector<v1::RegionInfo>> AgentClient::ListRegions() {
  return WalkPages<v1::ListRegionsRequest, v1::ListRegionsResponse>(
      [this](const v1::ListRegionsRequest& request, v1::ListRegionsResponse* out) {
        BRAID_UNARY(ListRegions, request, *out);
        return Status::Ok();
      },
      &v1::ListRegionsResponse::mutable_regions);
}

Status AgentClient::DeregisterMemory(uint64_t region_id) {
  v1::DeregisterMemoryRequest request;
  request.set_region_id(region_id);
  v1::DeregisterMemoryResponse out;
  BRAID_UNARY(DeregisterMemory, request, out);
  return Status::Ok();
}

Result<v1::Device> AgentClient::DrainDevice(const std::string& device) {
  v1::DrainDeviceRequest request;
  request.set_device(device);
  v1::Device out;
  BRAID_UNARY(DrainDevice, request, out);
  return out;
}

Result<v1::Device> AgentClient::UndrainDevice(const std::string& device) {
  v1::DrainDeviceRequest request;
  request.set_device(device);
  v1::Device out;
  BRAID_UNARY(UndrainDevice, request, out);
  return out;
}

#undef BRAID_UNARY

Result<bool> AgentClient::Serving(const std::string& service) {
  BRAID_RETURN_IF_ERROR(Usable());
  if (service.size() > 127) return Status::InvalidArgument("health service name too long");
  grpc::GenericStub generic(channel_);
  grpc::ClientContext ctx;
  Prepare(ctx);
  // HealthCheckRequest{service}: field 1, length-delimited (no bytes at all for "").
  std::string encoded;
  if (!service.empty()) {
    encoded = std::string{'\x0a', static_cast<char>(service.size())} + service;
  }
  grpc::Slice body(encoded);
  grpc::ByteBuffer request(&body, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                    [&done](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status s = done.get_future().get();
  if (!s.ok()) return FromGrpc(s);
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return Status::Internal("unreadable health response");
  std::string bytes;
  for (const auto& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  // HealthCheckResponse{status}: field 1 as a varint; SERVING is 1.
  return bytes.size() == 2 && bytes[0] == 0x08 && bytes[1] == 1;
}

Region::~Region() {
  munmap(data_, mapped_);
  if (!owner_ || !owner_->Usable().ok()) return;
  // Transfers the agent still runs (e.g. after a cancelled session) hold the region until their
  // completions arrive, each by its deadline; wait for them, within the client's call timeout.
  const auto give_up = std::chrono::steady_clock::now() + owner_->options().call_timeout;
  Status s = owner_->DeregisterMemory(info_.region_id());
  while (s.code() == common::StatusCode::kFailedPrecondition &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    s = owner_->DeregisterMemory(info_.region_id());
  }
}

}  // namespace braid::client
