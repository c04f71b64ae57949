// vireo/vmm: the control socket's transport (--api-socket PATH): a unix stream socket speaking one JSON object
// per line each way (docs/vmm.md). Runs entirely on the machine's I/O EventLoop thread, never on a vCPU
// thread. The command set itself is vmm/commands.h.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/event_loop.h"
#include "common/fd.h"

namespace vireo::vmm {

// Turns one request line into one reply (pure apart from the machine calls; unit-testable with a fake).
// `after` is set for commands that act once the reply has been sent (stop, reset).
struct CommandResult {
  nlohmann::json reply;
  std::function<void()> after;
};

class CommandHandler {
 public:
  virtual ~CommandHandler() = default;
  virtual CommandResult handle(const std::string& line) = 0;
};

// Builds {"id":..., "return":...}.
nlohmann::json ok_reply(const nlohmann::json& id, const nlohmann::json& ret);

// Builds {"id":..., "error":{"class":..., "desc":...}}.
nlohmann::json error_reply(const nlohmann::json& id, const std::string& cls, const std::string& desc);

class ControlServer {
 public:
  // Binds and listens at `path` (an existing socket file there is replaced; anything else is an error) and
  // serves on `loop`. Removes the socket file on destruction.
  ControlServer(EventLoop& loop, const std::string& path, CommandHandler& handler);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

 private:
  struct Client {
    UniqueFd fd;
    std::string in;
  };
  void on_accept();
  void on_client(int fd, uint32_t events);
  void close_client(int fd);
  void send_line(int fd, const std::string& line);

  EventLoop& loop_;
  std::string path_;
  CommandHandler& handler_;
  UniqueFd listen_;
  std::map<int, std::unique_ptr<Client>> clients_;  // touched only on the loop thread (and the destructor)
};

}  // namespace vireo::vmm
