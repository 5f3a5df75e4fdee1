// Deployment: the Helm chart renders (default values and every toggle flipped) into the objects,
// names, ports, probes and labels expected; a real Prometheus scrapes two running agents, ingests
// the braid_* series, and every PromQL expression of the Grafana dashboard evaluates against it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "tests/agent/agent_harness.h"
#include "tests/testutil/test_port.h"

namespace braid::testing {
namespace {

struct Rendered {
  int exit_code = -1;
  std::string text;
  std::vector<YAML::Node> docs;
  const YAML::Node* Find(const std::string& kind, const std::string& name = "") const {
    for (const auto& d : docs) {
      if (d["kind"].as<std::string>() == kind &&
          (name.empty() || d["metadata"]["name"].as<std::string>() == name)) {
        return &d;
      }
    }
    return nullptr;
  }
};

Rendered Render(const std::string& args) {
  Rendered r;
  const CommandResult run = RunCommand(std::string(BRAID_HELM_RENDER) + " " + args + " " +
                                       BRAID_SOURCE_DIR "/helm/braid");
  r.exit_code = run.exit_code;
  r.text = run.output;
  if (r.exit_code == 0) {
    for (const YAML::Node& d : YAML::LoadAll(r.text)) {
      if (d.IsMap()) r.docs.push_back(d);
    }
  }
  return r;
}

void ExpectLabels(const YAML::Node& obj) {
  const YAML::Node labels = obj["metadata"]["labels"];
  EXPECT_EQ(labels["app.kubernetes.io/name"].as<std::string>(), "braid");
  EXPECT_EQ(labels["app.kubernetes.io/instance"].as<std::string>(), "edge");
  EXPECT_EQ(labels["app.kubernetes.io/managed-by"].as<std::string>(), "Helm");
  EXPECT_EQ(labels["helm.sh/chart"].as<std::string>(), "braid-0.1.0");
}

// braidd itself reads and validates a rendered config (--check-config).
void ExpectBraiddAccepts(const std::string& config) {
  const std::string path = ::testing::TempDir() + "/braid-rendered-" + std::to_string(getpid());
  std::ofstream(path) << config;
  const CommandResult r =
      RunCommand(std::string(BRAID_BRAIDD_PATH) + " --check-config --config " + path);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::filesystem::remove(path);
}

TEST(HelmChart, DefaultValuesRenderTheAgentDaemonSetAndItsObjects) {
  Rendered r = Render("--name edge");
  ASSERT_EQ(r.exit_code, 0) << r.text;
  std::multiset<std::string> kinds;
  for (const auto& d : r.docs) {
    kinds.insert(d["kind"].as<std::string>());
    ExpectLabels(d);
  }
  EXPECT_EQ(kinds, (std::multiset<std::string>{"ConfigMap", "ConfigMap", "DaemonSet", "Service",
                                               "ServiceAccount"}));
  const YAML::Node* ds = r.Find("DaemonSet", "edge-braid");
  ASSERT_NE(ds, nullptr);
  const YAML::Node spec = (*ds)["spec"]["template"]["spec"];
  EXPECT_TRUE(spec["hostNetwork"].as<bool>());
  EXPECT_EQ(spec["serviceAccountName"].as<std::string>(), "edge-braid");
  EXPECT_EQ(spec["terminationGracePeriodSeconds"].as<int>(), 20);  // 5 s of drain, 15 to stop
  EXPECT_EQ(
      (*ds)["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"].as<std::string>(),
      "edge");
  const YAML::Node c = spec["containers"][0];
  EXPECT_EQ(c["image"].as<std::string>(), "ghcr.io/braid-project/braidd:0.1.0");
  std::map<std::string, int> ports;
  for (const auto& p : c["ports"])
    ports[p["name"].as<std::string>()] = p["containerPort"].as<int>();
  EXPECT_EQ(ports, (std::map<std::string, int>{{"grpc", 7600}, {"metrics", 9464}}));
  // Peers call the agent back on the pod's IP: listen.tcp's 0.0.0.0 is no address to dial. With no
  // softNics, the soft NIC takes that address too (AgentConfig::DefaultSoftNicAddress).
  const std::vector<std::string> args = {"--config",    "/etc/braid/braidd.yaml",
                                         "--agent-id",  "$(NODE_NAME)",
                                         "--advertise", "$(POD_IP):7600"};
  EXPECT_EQ(c["args"].as<std::vector<std::string>>(), args);
  std::map<std::string, std::string> env;
  for (const auto& e : c["env"]) {
    env[e["name"].as<std::string>()] = e["valueFrom"]["fieldRef"]["fieldPath"].as<std::string>();
  }
  EXPECT_EQ(env, (std::map<std::string, std::string>{{"NODE_NAME", "spec.nodeName"},
                                                     {"POD_IP", "status.podIP"}}));
  // TLS is on by default: kubelet's gRPC probe cannot speak it, braidctl probes the Unix socket.
  // Liveness asks only whether the data plane turns: a node whose links are down or devices
  // drained is not ready, and restarting its agent would destroy every VQP on it.
  std::vector<std::string> probe = {"braidctl", "--agent", "unix:/run/braid/braidd.sock", "health"};
  EXPECT_EQ(c["readinessProbe"]["exec"]["command"].as<std::vector<std::string>>(), probe);
  probe.push_back("--liveness");
  EXPECT_EQ(c["livenessProbe"]["exec"]["command"].as<std::vector<std::string>>(), probe);
  bool tls_mount = false;
  for (const auto& m : c["volumeMounts"]) {
    tls_mount |= m["name"].as<std::string>() == "tls" &&
                 m["mountPath"].as<std::string>() == "/etc/braid-tls";
  }
  EXPECT_TRUE(tls_mount);
  EXPECT_EQ(c["resources"]["limits"]["rdma/hca_shared_devices_a"].as<int>(), 1);
  EXPECT_EQ(c["securityContext"]["capabilities"]["add"][0].as<std::string>(), "IPC_LOCK");
  bool region_volume = false;
  for (const auto& v : spec["volumes"]) {
    if (v["name"].as<std::string>() == "regions") {
      region_volume = v["hostPath"]["path"].as<std::string>() == "/dev/shm/braid";
    }
    EXPECT_NE(v["name"].as<std::string>(), "infiniband");
  }
  EXPECT_TRUE(region_volume);
  bool tls_secret = false;
  for (const auto& v : spec["volumes"]) {
    tls_secret |= v["name"].as<std::string>() == "tls" &&
                  v["secret"]["secretName"].as<std::string>() == "edge-braid-tls";
  }
  EXPECT_TRUE(tls_secret);
  const YAML::Node* svc = r.Find("Service", "edge-braid");
  ASSERT_NE(svc, nullptr);
  EXPECT_EQ((*svc)["spec"]["ports"][0]["port"].as<int>(), 7600);
  EXPECT_EQ((*svc)["spec"]["ports"][1]["name"].as<std::string>(), "metrics");
  // The agent's config, as braidd reads it.
  const YAML::Node* cm = r.Find("ConfigMap", "edge-braid");
  ASSERT_NE(cm, nullptr);
  const YAML::Node config = YAML::Load((*cm)["data"]["braidd.yaml"].as<std::string>());
  EXPECT_EQ(config["listen"]["tcp"].as<std::string>(), "0.0.0.0:7600");
  EXPECT_EQ(config["metrics"]["listen"].as<std::string>(), "0.0.0.0:9464");
  EXPECT_FALSE(config["fault_injection"]["enabled"].as<bool>());
  EXPECT_EQ(config["tls"]["cert"].as<std::string>(), "/etc/braid-tls/tls.crt");
  EXPECT_EQ(config["tls"]["client_auth"].as<std::string>(), "require");
  EXPECT_FALSE(config["plaintext"]);
  EXPECT_EQ(config["max_vqps_per_caller"].as<int>(), 1024);
  EXPECT_EQ(config["max_regions_per_caller"].as<int>(), 4096);
  EXPECT_EQ(config["max_region_bytes_per_caller"].as<int64_t>(), 68719476736);
  EXPECT_EQ(config["max_transfers"].as<int>(), 65536);
  EXPECT_EQ(config["transfer_window_per_caller"].as<int>(), 65536);
  EXPECT_EQ(config["watch_backlog_per_caller"].as<int>(), 1048576);
  EXPECT_EQ(config["max_transfers_per_caller"].as<int>(), 16384);
  EXPECT_EQ(config["max_session_bytes_per_caller"].as<int64_t>(), 268435456);
  EXPECT_EQ(config["unix_connections_per_uid"].as<int>(), 256);
  EXPECT_EQ(config["memory_reserve"].as<int64_t>(), 268435456);
  EXPECT_EQ(config["shutdown_drain_ms"].as<int>(), 5000);
  ExpectBraiddAccepts((*cm)["data"]["braidd.yaml"].as<std::string>());
  // The dashboard for Grafana's sidecar, valid JSON with its panels.
  const YAML::Node* dash = r.Find("ConfigMap", "edge-braid-dashboard");
  ASSERT_NE(dash, nullptr);
  EXPECT_EQ((*dash)["metadata"]["labels"]["grafana_dashboard"].as<std::string>(), "1");
  const auto json = nlohmann::json::parse((*dash)["data"]["braid.json"].as<std::string>());
  EXPECT_EQ(json["uid"], "braid-agents");
  EXPECT_GE(json["panels"].size(), 20u);
}

TEST(HelmChart, EveryToggleFlipped) {
  const std::string values = ::testing::TempDir() + "/braid-values.yaml";
  std::ofstream(values) << "agent:\n  provider: soft\n  softNics:\n"
                           "  - {name: soft0, ip: 10.0.0.5}\n  - {name: soft1, ip: 10.0.1.5}\n"
                           "serviceMonitor:\n  labels: {release: kube-prometheus}\n"
                           "nodeSelector: {braid.io/rdma: \"true\"}\n";
  Rendered r = Render("--name edge -f " + values +
                      " --set rdma.mode=privileged --set serviceMonitor.enabled=true"
                      " --set dashboard.enabled=false --set serviceAccount.create=false"
                      " --set hostNetwork=false --set agent.faultInjection=true"
                      " --set agent.metricsPerQp=true --set image.tag=9.9.9"
                      " --set tls.enabled=false --set auth.anonymousRole=client"
                      " --set agent.shutdownDrainMs=60500");
  ASSERT_EQ(r.exit_code, 0) << r.text;
  EXPECT_EQ(r.Find("ServiceAccount"), nullptr);
  EXPECT_EQ(r.Find("ConfigMap", "edge-braid-dashboard"), nullptr);
  const YAML::Node* sm = r.Find("ServiceMonitor", "edge-braid");
  ASSERT_NE(sm, nullptr);
  ExpectLabels(*sm);
  EXPECT_EQ((*sm)["metadata"]["labels"]["release"].as<std::string>(), "kube-prometheus");
  EXPECT_EQ((*sm)["spec"]["endpoints"][0]["port"].as<std::string>(), "metrics");
  const YAML::Node* ds = r.Find("DaemonSet");
  ASSERT_NE(ds, nullptr);
  const YAML::Node spec = (*ds)["spec"]["template"]["spec"];
  EXPECT_FALSE(spec["hostNetwork"].as<bool>());
  EXPECT_FALSE(spec["dnsPolicy"]);
  EXPECT_EQ(spec["serviceAccountName"].as<std::string>(), "default");
  EXPECT_EQ(spec["nodeSelector"]["braid.io/rdma"].as<std::string>(), "true");
  EXPECT_EQ(spec["terminationGracePeriodSeconds"].as<int>(), 76);  // a 60.5 s drain, 15 s to stop
  const YAML::Node c = spec["containers"][0];
  EXPECT_EQ(c["image"].as<std::string>(), "ghcr.io/braid-project/braidd:9.9.9");
  EXPECT_TRUE(c["securityContext"]["privileged"].as<bool>());
  EXPECT_FALSE(c["resources"]["limits"]["rdma/hca_shared_devices_a"]);
  bool ib = false;
  for (const auto& v : spec["volumes"]) ib |= v["name"].as<std::string>() == "infiniband";
  EXPECT_TRUE(ib);
  const YAML::Node config =
      YAML::Load((*r.Find("ConfigMap", "edge-braid"))["data"]["braidd.yaml"].as<std::string>());
  EXPECT_EQ(config["provider"].as<std::string>(), "soft");
  EXPECT_TRUE(config["fault_injection"]["enabled"].as<bool>());
  EXPECT_TRUE(config["metrics"]["per_qp"].as<bool>());
  EXPECT_EQ(config["soft"]["nics"][1]["ip"].as<std::string>(), "10.0.1.5");
  EXPECT_TRUE(config["plaintext"].as<bool>());
  EXPECT_FALSE(config["tls"]);
  EXPECT_EQ(config["auth"]["anonymous_role"].as<std::string>(), "client");
  EXPECT_EQ(c["livenessProbe"]["grpc"]["port"].as<int>(), 7600);
  EXPECT_EQ(c["livenessProbe"]["grpc"]["service"].as<std::string>(), "liveness");
  EXPECT_EQ(c["readinessProbe"]["grpc"]["port"].as<int>(), 7600);
  EXPECT_FALSE(c["readinessProbe"]["grpc"]["service"]);
  ExpectBraiddAccepts(
      (*r.Find("ConfigMap", "edge-braid"))["data"]["braidd.yaml"].as<std::string>());
}

TEST(HelmChart, ABadRdmaModeIsRefused) {
  Rendered r = Render("--set rdma.mode=magic");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.text.find("rdma.mode must be devicePlugin or privileged"), std::string::npos)
      << r.text;
}

std::string UrlEncode(const std::string& s) {
  std::string out;
  char buf[4];
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out += static_cast<char>(ch);
    } else {
      std::snprintf(buf, sizeof(buf), "%%%02X", ch);
      out += buf;
    }
  }
  return out;
}

nlohmann::json Query(uint16_t port, const std::string& promql) {
  const std::string body = HttpGet(port, "/api/v1/query?query=" + UrlEncode(promql));
  return nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
}

TEST(Prometheus, ScrapesTheAgentsAndEveryDashboardQueryEvaluates) {
  auto a = AgentProcess::Spawn({"prom-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0});
  auto b = AgentProcess::Spawn({"prom-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2});
  ASSERT_TRUE(a && b);
  const std::string dir = ::testing::TempDir() + "/braid-prometheus-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  const uint16_t prom_port = TestPort(5);
  std::ofstream(dir + "/prometheus.yml")
      << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
         "scrape_configs:\n  - job_name: braid\n    static_configs:\n"
         "      - targets: ['127.0.0.1:"
      << a->metrics_port() << "', '127.0.0.1:" << b->metrics_port() << "']\n";
  const pid_t prom = fork();
  if (prom == 0) {
    const std::string cfg = "--config.file=" + dir + "/prometheus.yml";
    const std::string data = "--storage.tsdb.path=" + dir + "/data";
    const std::string listen = "--web.listen-address=127.0.0.1:" + std::to_string(prom_port);
    if (freopen((dir + "/prometheus.log").c_str(), "w", stderr) == nullptr) _exit(126);
    execlp("prometheus", "prometheus", cfg.c_str(), data.c_str(), listen.c_str(), nullptr);
    _exit(127);
  }
  // Traffic, so that rates and histograms have data.
  auto va = CreateVqp(a->stub(), v1::SCHEME_SPRAY, 4);
  auto vb = CreateVqp(b->stub(), v1::SCHEME_SPRAY, 4);
  ConnectPair(a->stub(), va, b->stub(), vb);
  v1::RegionInfo src = Register(a->stub(), 64 << 20);
  v1::RegionInfo dst = Register(b->stub(), 64 << 20, "", {vb.vqp_id()});
  auto traffic = [&] {
    std::vector<v1::TransferOp> ops;
    for (uint64_t i = 0; i < 64; ++i) {
      v1::TransferOp r;
      r.set_op_id(i);
      r.set_vqp_id(va.vqp_id());
      r.set_op(i % 2 ? v1::OP_READ : v1::OP_WRITE_WITH_IMM);
      r.set_local_region_id(src.region_id());
      r.set_local_offset(i << 20);
      *r.mutable_remote() = GrantOf(dst);
      r.set_remote_offset(i << 20);
      r.set_length(1 << 20);
      ops.push_back(r);
    }
    for (int round = 0; round < 5; ++round) {
      TransferRun run = RunTransfers(a->stub(), ops);
      ASSERT_TRUE(run.status.ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  };
  // Prometheus up and both agents ingested.
  bool ingested = false;
  for (int i = 0; i < 300 && !ingested; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!PortOpen(prom_port)) continue;  // Prometheus still starting (slow under load)
    auto j = Query(prom_port, "braid_engine_up");
    ingested = j.is_object() && j["status"] == "success" && j["data"]["result"].size() == 2;
  }
  ASSERT_TRUE(ingested) << "Prometheus did not ingest braid_engine_up from both agents";
  traffic();
  std::this_thread::sleep_for(std::chrono::seconds(2));  // a couple more scrapes
  auto series = Query(prom_port, "count({__name__=~\"braid_.+\"})");
  ASSERT_EQ(series["status"], "success");
  const double count = std::stod(series["data"]["result"][0]["value"][1].get<std::string>());
  std::printf("Prometheus holds %.0f braid_* series from 2 agents\n", count);
  EXPECT_GT(count, 50);

  // Every dashboard expression, with the agent variable set to all agents.
  std::ifstream f(BRAID_SOURCE_DIR "/helm/braid/dashboards/braid.json");
  const auto dash = nlohmann::json::parse(f);
  int evaluated = 0, with_data = 0;
  for (const auto& panel : dash["panels"]) {
    if (!panel.contains("targets")) continue;
    for (const auto& target : panel["targets"]) {
      std::string expr = target["expr"];
      for (size_t pos; (pos = expr.find("$instance")) != std::string::npos;) {
        expr.replace(pos, 9, ".*");
      }
      auto j = Query(prom_port, expr);
      ASSERT_TRUE(j.is_object()) << expr;
      EXPECT_EQ(j["status"], "success") << expr << ": " << j.dump();
      ++evaluated;
      const bool data = !j["data"]["result"].empty();
      with_data += data ? 1 : 0;
      const std::string title = panel["title"];
      // Panels fed by this traffic or always present must show data.
      for (const char* must :
           {"Bytes per second", "Virtual WR completions", "Physical QPs", "latency p50",
            "latency p99", "Engine answering", "Devices by state", "Dead QPs", "Outstanding",
            "File descriptors", "Resident memory", "Threads and CPU", "Restarts"}) {
        if (title.find(must) != std::string::npos) {
          EXPECT_TRUE(data) << title << ": " << expr;
        }
      }
    }
  }
  std::printf("dashboard: %d expressions evaluated, %d with data\n", evaluated, with_data);
  EXPECT_GE(evaluated, 16);
  kill(prom, SIGTERM);
  waitpid(prom, nullptr, 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace braid::testing
