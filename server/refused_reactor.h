// Reactors that only end a streaming call with a status: a refused admission or request.
// gRPC owns them once returned from a callback method; they delete themselves in OnDone.
#ifndef BRAID_SERVER_REFUSED_REACTOR_H_
#define BRAID_SERVER_REFUSED_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <memory>

namespace braid::server {

template <typename Request, typename Response>
class RefusedBidi final : public grpc::ServerBidiReactor<Request, Response> {
 public:
  static grpc::ServerBidiReactor<Request, Response>* Make(grpc::Status status) {
    return std::make_unique<RefusedBidi>(std::move(status)).release();  // gRPC owns it now
  }
  explicit RefusedBidi(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { std::unique_ptr<RefusedBidi> last(this); }
};

template <typename Response>
class RefusedWrite final : public grpc::ServerWriteReactor<Response> {
 public:
  static grpc::ServerWriteReactor<Response>* Make(grpc::Status status) {
    return std::make_unique<RefusedWrite>(std::move(status)).release();  // gRPC owns it now
  }
  explicit RefusedWrite(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { std::unique_ptr<RefusedWrite> last(this); }
};

}  // namespace braid::server

#endif  // BRAID_SERVER_REFUSED_REACTOR_H_
