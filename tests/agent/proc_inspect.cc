// What an agent process holds and spends, read from /proc: CPU ticks, descriptors (TCP sockets
// named with their state), threads and their names, RSS. Declared in agent_harness.h.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/common/proc_status.h"
#include "tests/agent/agent_harness.h"

namespace braid::testing {

namespace {

// The fields of a /proc/.../stat file after the command's closing parenthesis: the state first.
std::string StatFields(const std::filesystem::path& stat_path) {
  std::ifstream in(stat_path);
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close_paren = stat.rfind(')');
  return close_paren == std::string::npos || close_paren + 2 >= stat.size()
             ? std::string()
             : stat.substr(close_paren + 2);
}

}  // namespace

uint64_t CpuTicks(pid_t pid) {
  std::istringstream fields(StatFields("/proc/" + std::to_string(pid) + "/stat"));
  std::string f;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; fields >> f; ++i) {  // field 3 is the state
    if (i == 14) utime = std::stoull(f);
    if (i == 15) {
      stime = std::stoull(f);
      break;
    }
  }
  return utime + stime;
}

namespace {

// The entries of /proc/<pid>/<dir> (fd or task), by path.
std::vector<std::filesystem::path> ProcEntries(pid_t pid, const char* dir) {
  std::vector<std::filesystem::path> out;
  std::error_code ec;
  for (auto it =
           std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/" + dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    out.push_back(it->path());
  }
  return out;
}

struct TcpSocket {
  std::string local, remote, state;  // hex, as /proc/net/tcp has them; state 08 is CLOSE_WAIT
};

// The TCP sockets of the process's network namespace, by inode.
std::map<std::string, TcpSocket> TcpSockets(pid_t pid) {
  std::map<std::string, TcpSocket> out;
  for (const char* table : {"/net/tcp", "/net/tcp6"}) {
    std::ifstream in("/proc/" + std::to_string(pid) + table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string sl, local, remote, state, queues, timer, retr, uid, timeout, inode;
      fields >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >>
          inode;
      out[inode] = TcpSocket{local, remote, state};
    }
  }
  return out;
}

// "socket:[123]" → "123"; "" for anything else.
std::string SocketInode(const std::string& target) {
  if (target.rfind("socket:[", 0) != 0) return "";
  return target.substr(8, target.size() - 9);
}

}  // namespace

bool StopProcess(pid_t pid) {
  if (kill(pid, SIGSTOP) != 0) return false;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < give_up) {
    const std::vector<std::filesystem::path> tasks = ProcEntries(pid, "task");
    if (!tasks.empty() && std::all_of(tasks.begin(), tasks.end(), [](const auto& task) {
          const std::string fields = StatFields(task / "stat");
          return !fields.empty() && (fields[0] == 'T' || fields[0] == 't');
        })) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return false;
}

size_t OpenFds(pid_t pid) { return ProcEntries(pid, "fd").size(); }

size_t SteadyOpenFds(pid_t pid) {
  size_t fewest = OpenFds(pid);
  for (int i = 0; i < 10; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    fewest = std::min(fewest, OpenFds(pid));
  }
  return fewest;
}

std::vector<std::string> FdTargets(pid_t pid) {
  const std::map<std::string, TcpSocket> tcp = TcpSockets(pid);
  std::vector<std::string> out;
  for (const auto& fd : ProcEntries(pid, "fd")) {
    std::error_code ec;
    std::string target = std::filesystem::read_symlink(fd, ec).string();
    auto it = tcp.find(SocketInode(target));
    if (it != tcp.end()) {
      target += " tcp " + it->second.local + " " + it->second.remote + " st=" + it->second.state;
    }
    out.push_back(std::move(target));
  }
  std::sort(out.begin(), out.end());
  return out;
}

size_t Threads(pid_t pid) { return ProcEntries(pid, "task").size(); }

size_t ExecutorThreads(pid_t pid) {
  size_t n = 0;
  for (const std::string& name : ThreadNames(pid)) n += name.rfind("default-executo", 0) == 0;
  return n;
}

size_t MaxExecutorThreads() {
  return 2 * static_cast<size_t>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
}

std::vector<std::string> ThreadNames(pid_t pid) {
  std::vector<std::string> out;
  for (const auto& task : ProcEntries(pid, "task")) {
    std::ifstream in(task / "comm");
    std::string name;
    std::getline(in, name);
    out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

uint64_t RssKiB(pid_t pid) {
  return common::ProcStatusField("VmRSS", 10, "/proc/" + std::to_string(pid) + "/status")
      .value_or(0);
}

size_t SharedMappings(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/maps");
  size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    const size_t perms = line.find(' ');  // "start-end rw-s offset ..."
    if (perms != std::string::npos && perms + 4 < line.size() && line[perms + 4] == 's') ++n;
  }
  return n;
}

size_t CloseWaitSockets(pid_t pid) {
  const std::map<std::string, TcpSocket> tcp = TcpSockets(pid);
  size_t n = 0;
  for (const auto& fd : ProcEntries(pid, "fd")) {
    std::error_code ec;
    auto it = tcp.find(SocketInode(std::filesystem::read_symlink(fd, ec).string()));
    if (it != tcp.end() && it->second.state == "08") ++n;
  }
  return n;
}

}  // namespace braid::testing
