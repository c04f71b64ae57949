#include "vmm/commands.h"

#include <unistd.h>

#include "kvm/pvm.h"
#include "vmm/machine.h"

namespace vireo::vmm {

using nlohmann::json;

void invalid_argument(const std::string& desc) { throw CommandError("InvalidArgument", desc); }

MachineCommands::MachineCommands(Machine& m) : m_(m) {
  add_command("query-status", [this](const json&) {
    return CommandReply{{{"status", run_state_name(m_.state())}, {"reason", m_.state_reason()}}};
  });
  add_command("query-vm", [this](const json&) {
    const auto& c = m_.config();
    json devs = json::array();
    for (const auto& d : m_.devices().infos()) devs.push_back({{"type", d.type}, {"id", d.id}, {"details", d.details}});
    return CommandReply{{{"name", c.name},
                         {"pid", static_cast<int>(::getpid())},
                         {"status", run_state_name(m_.state())},
                         {"vcpus", c.cpus},
                         {"memory_bytes", c.memory.size},
                         {"cpu_mode", cpu::format_cpu_spec(c.cpu)},
                         {"kernel", c.boot.kernel},
                         {"kernel_kind", boot::kernel_kind_name(m_.boot_plan().kind)},
                         {"pvm", kvm::pvm_mode_name(m_.pvm_mode())},
                         {"devices", devs}}};
  });
  add_command("query-config", [this](const json&) { return CommandReply{config::to_json(m_.config())}; });
  add_command("pause", [this](const json&) {
    m_.pause();
    return CommandReply{};
  });
  add_command("resume", [this](const json&) {
    m_.resume();
    return CommandReply{};
  });
  add_command("shutdown", [this](const json&) {
    m_.request_shutdown();
    return CommandReply{};
  });
  add_command("reset", [this](const json&) {
    Machine* m = &m_;
    return CommandReply{json::object(), [m] { m->request_exit(kExitReset, "reset requested", RunState::Shutoff); }};
  });
  add_command("stop", [this](const json&) {
    Machine* m = &m_;
    return CommandReply{json::object(), [m] { m->request_exit(kExitOk, "destroyed", RunState::Shutoff); }};
  });
  add_balloon_commands(*this, m_);
  add_snapshot_commands(*this, m_);
}

CommandResult MachineCommands::handle(const std::string& line) {
  json req;
  try {
    req = json::parse(line);
  } catch (const json::exception& e) {
    return {error_reply(nullptr, "InvalidArgument", std::string("request is not valid JSON: ") + e.what()), nullptr};
  }
  if (!req.is_object()) return {error_reply(nullptr, "InvalidArgument", "request must be a JSON object"), nullptr};
  const json id = req.contains("id") ? req["id"] : json();
  if (!req.contains("command") || !req["command"].is_string())
    return {error_reply(id, "InvalidArgument", "missing string member 'command'"), nullptr};
  if (req.contains("arguments") && !req["arguments"].is_object())
    return {error_reply(id, "InvalidArgument", "'arguments' must be an object"), nullptr};
  const std::string cmd = req["command"];
  auto it = commands_.find(cmd);
  if (it == commands_.end()) return {error_reply(id, "CommandNotFound", "unknown command '" + cmd + "'"), nullptr};
  try {
    CommandReply r = it->second(req.contains("arguments") ? req["arguments"] : json::object());
    return {ok_reply(id, r.ret), std::move(r.after)};
  } catch (const CommandError& e) {
    return {error_reply(id, e.error_class(), e.what()), nullptr};
  } catch (const InvalidStateError& e) {
    return {error_reply(id, "InvalidState", e.what()), nullptr};
  } catch (const std::exception& e) {
    return {error_reply(id, "Internal", e.what()), nullptr};
  }
}

}  // namespace vireo::vmm
