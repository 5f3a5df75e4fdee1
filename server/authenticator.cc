#include "server/authenticator.h"

#include <grpc/grpc_security_constants.h>
#include <sys/stat.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "dataplane/common/quote.h"
#include "dataplane/common/regular_file.h"

namespace braid::server {

namespace {

constexpr std::string_view kBearer = "Bearer ";

// Equal strings, compared in time that depends on their lengths only.
bool SameSecret(const std::string& a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string FirstProperty(const grpc::AuthContext& auth, const char* name) {
  for (const auto& v : auth.FindPropertyValues(name)) {
    if (!v.empty()) return std::string(v.data(), v.size());
  }
  return "";
}

}  // namespace

Authenticator::Authenticator(AuthConfig config)
    : config_(std::move(config)),
      anonymous_owner_(static_cast<engine::OwnerId>(config_.identities.size() + 1)) {}

bool Authenticator::Identify(const grpc::ServerContextBase& context, Caller* caller,
                             Refusal* refusal) {
  // 1. A certificate TLS verified.
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth && auth->IsPeerAuthenticated()) {
    std::string id = FirstProperty(*auth, GRPC_PEER_URI_PROPERTY_NAME);
    if (id.empty()) id = FirstProperty(*auth, GRPC_PEER_DNS_PROPERTY_NAME);
    if (id.empty()) id = FirstProperty(*auth, GRPC_X509_CN_PROPERTY_NAME);
    if (!id.empty()) return Bind(id, caller, refusal);
  }
  // 2. A bearer token.
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    std::string_view value(it->second.data(), it->second.size());
    if (value.substr(0, kBearer.size()) != kBearer) {
      refusal->status = {grpc::StatusCode::UNAUTHENTICATED,
                         "the authorization header must be 'Bearer <token>'"};
      refusal->reason = "bad_token";
      return false;
    }
    std::string id;
    if (!TokenIdentity(std::string(value.substr(kBearer.size())), &id, refusal)) return false;
    return Bind(id, caller, refusal);
  }
  // 3. The uid of a Unix socket peer.
  std::optional<uint32_t> uid;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = unix_peers_.find(context.peer()); it != unix_peers_.end()) uid = it->second;
  }
  if (uid) return IdentifyLocal(*uid, caller, refusal);
  return Anonymous(caller, refusal);
}

bool Authenticator::IdentifyLocal(uint32_t uid, Caller* caller, Refusal* refusal) const {
  caller->uid = static_cast<int>(uid);
  const std::string id = "uid:" + std::to_string(uid);
  // An unlisted uid may still come in as anonymous (below), if the config allows that.
  for (const IdentityBinding& b : config_.identities) {
    if (b.id == id) return Bind(id, caller, refusal);
  }
  return Anonymous(caller, refusal);
}

bool Authenticator::Anonymous(Caller* caller, Refusal* refusal) const {
  if (config_.anonymous_role) {
    caller->identity.clear();
    caller->role = *config_.anonymous_role;
    caller->owner = anonymous_owner_;
    return true;
  }
  refusal->status = {grpc::StatusCode::UNAUTHENTICATED,
                     "the caller has no identity: present a client certificate or a bearer token, "
                     "or call over the Unix socket as a configured uid"};
  refusal->reason = "no_identity";
  return false;
}

bool Authenticator::Bind(const std::string& identity, Caller* caller, Refusal* refusal) const {
  for (size_t i = 0; i < config_.identities.size(); ++i) {
    if (config_.identities[i].id == identity) {
      caller->identity = identity;
      caller->role = config_.identities[i].role;
      caller->owner = static_cast<engine::OwnerId>(i + 1);
      return true;
    }
  }
  refusal->status = {grpc::StatusCode::PERMISSION_DENIED,
                     "identity " + common::Quote(identity) +
                         " has no role on this agent: add it to auth.identities"};
  refusal->reason = "unknown_identity";
  return false;
}

namespace {

// A tokens file read: its entries, (token, identity), and its first broken line (skipped) with
// why, line 0 when none is broken.
struct Tokens {
  std::vector<std::pair<std::string, std::string>> entries;
  int broken_line = 0;
  std::string why;
};

Tokens ParseTokens(std::istream& in) {
  Tokens out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    std::istringstream fields(line);
    std::string id, secret, more;
    if (!(fields >> id) || id[0] == '#') continue;
    const bool has_secret = static_cast<bool>(fields >> secret);
    if (!has_secret || fields >> more) {
      if (out.broken_line == 0) {
        out.broken_line = n;
        out.why = common::Quote(id) +
                  (has_secret ? " has more than one token after it" : " has no token after it");
      }
      continue;
    }
    out.entries.emplace_back(std::move(secret), std::move(id));
  }
  return out;
}

}  // namespace

common::Status Authenticator::CheckTokensFile(const std::string& path) {
  const std::string what = "auth.tokens_file " + common::Quote(path);
  BRAID_RETURN_IF_ERROR(common::CheckRegularFile(path, what));
  std::ifstream in(path);
  if (!in) return common::Status::FromErrno(errno, what);
  const Tokens tokens = ParseTokens(in);
  if (tokens.broken_line != 0) {
    return common::Status::InvalidArgument(what + " line " + std::to_string(tokens.broken_line) +
                                           ": " + tokens.why +
                                           "; each line is '<identity> <token>'");
  }
  return common::Status::Ok();
}

bool Authenticator::TokenIdentity(const std::string& token, std::string* identity,
                                  Refusal* refusal) {
  std::lock_guard<std::mutex> lock(mu_);
  struct stat st {};
  if (config_.tokens_file.empty() || stat(config_.tokens_file.c_str(), &st) != 0) {
    tokens_.clear();
    tokens_size_ = -1;
  } else if (st.st_mtim.tv_sec != tokens_mtime_.tv_sec ||
             st.st_mtim.tv_nsec != tokens_mtime_.tv_nsec || st.st_size != tokens_size_) {
    std::ifstream in(config_.tokens_file);
    tokens_ = ParseTokens(in).entries;  // a broken line is skipped (CheckTokensFile names it)
    tokens_mtime_ = st.st_mtim;
    tokens_size_ = st.st_size;
  }
  bool found = false;
  for (const auto& [secret, id] : tokens_) {  // every entry, whatever matches (timing)
    if (SameSecret(secret, token) && !found) {
      *identity = id;
      found = true;
    }
  }
  if (!found) {
    refusal->status = {grpc::StatusCode::UNAUTHENTICATED,
                       "the bearer token is not known to this agent (revoked, or from another "
                       "cluster)"};
    refusal->reason = "bad_token";
  }
  return found;
}

std::string Authenticator::IdentityOf(engine::OwnerId owner) const {
  if (owner >= 1 && owner <= config_.identities.size()) return config_.identities[owner - 1].id;
  return "";
}

void Authenticator::RecordUnixPeer(const std::string& peer, uint32_t uid) {
  std::lock_guard<std::mutex> lock(mu_);
  unix_peers_[peer] = uid;
}

}  // namespace braid::server
