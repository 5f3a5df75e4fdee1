// GrpcTransport: a TransferSession's operations over the Transfer stream (transfer_transport.h).

#include <thread>

#include "client_sdk/src/transfer_transport.h"
#include "dataplane/common/named_thread.h"

namespace braid::client::internal {

namespace {

class GrpcTransport final : public Transport {
 public:
  explicit GrpcTransport(std::shared_ptr<AgentClient> agent) : agent_(std::move(agent)) {}
  ~GrpcTransport() override {
    if (reader_.joinable()) Close();
  }

  Status Open() {
    stream_ = agent_->stub().Transfer(&context_);
    v1::TransferResponse first;
    if (!stream_->Read(&first) || !first.has_window()) {
      const grpc::Status s = stream_->Finish();
      stream_.reset();
      return s.ok() ? Status::IoError("the agent sent no Transfer window") : FromGrpc(s);
    }
    window_ = first.window().max_in_flight();
    return Status::Ok();
  }

  uint32_t window() const override { return window_; }
  const char* kind() const override { return "grpc"; }

  void Start(CompletionSink* sink) override {
    reader_ = common::NamedThread("braid-grpc-rd", [this, sink] { ReadLoop(sink); });
  }

  std::vector<std::pair<uint64_t, Status>> Send(uint64_t vqp_id,
                                                std::span<const WireOp> ops) override {
    v1::TransferRequest request;
    for (const WireOp& w : ops) {
      const TransferOp& op = *w.op;
      v1::TransferOp* out = request.add_ops();
      out->set_op_id(w.op_id);
      out->set_vqp_id(vqp_id);
      out->set_op(op.op);
      out->set_local_region_id(op.local_region);
      out->set_local_offset(op.local_offset);
      *out->mutable_remote() = op.remote;
      out->set_remote_offset(op.remote_offset);
      out->set_length(op.length);
      out->set_imm(op.imm);
      out->set_timeout_ms(w.timeout_ms);
    }
    // A failed write means the stream is ending: the reader ends the session (sink End).
    (void)stream_->Write(request);
    return {};
  }

  void Close() override {
    stream_->WritesDone();
    reader_.join();  // the agent ends the stream once nothing is outstanding
  }

  void Cancel() override { context_.TryCancel(); }

 private:
  void ReadLoop(CompletionSink* sink) {
    v1::TransferResponse response;
    while (stream_->Read(&response)) {
      for (const v1::TransferCompletion& c : response.completions()) {
        TransferResult r;
        r.op_id = c.op_id();
        r.status = FromGrpc(grpc::Status(static_cast<grpc::StatusCode>(c.code()), c.message()));
        r.wc_status = c.wc_status();
        r.bytes = c.bytes();
        r.latency_ns = c.latency_ns();
        sink->Complete(std::move(r));
      }
    }
    const grpc::Status end = stream_->Finish();
    sink->End(end.ok() ? Status::IoError("the agent closed the transfer stream")
                       : FromGrpc(end).WithContext("transfer stream to " + agent_->target()));
  }

  std::shared_ptr<AgentClient> agent_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::TransferRequest, v1::TransferResponse>> stream_;
  uint32_t window_ = 0;
  std::thread reader_;
};

}  // namespace

Result<std::unique_ptr<Transport>> OpenGrpcTransport(std::shared_ptr<AgentClient> agent) {
  auto t = std::make_unique<GrpcTransport>(std::move(agent));
  BRAID_RETURN_IF_ERROR(t->Open());
  return std::unique_ptr<Transport>(std::move(t));
}

}  // namespace braid::client::internal
