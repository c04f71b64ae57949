// vireo/vmm: the control socket's command set over a Machine (docs/vmm.md, "Control socket"). Each command is
// a function of its "arguments" object returning the "return" object; it reports failures by throwing:
// CommandError (any class), InvalidStateError -> InvalidState, other vireo::Error -> Internal. Command sets of
// other concerns (balloon, VM state) register themselves with add_command() from their own files.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <string>

#include "common/error.h"
#include "vmm/control.h"

namespace vireo::vmm {

class Machine;

class CommandError : public Error {
 public:
  CommandError(std::string cls, const std::string& desc) : Error(desc), cls_(std::move(cls)) {}
  const std::string& error_class() const { return cls_; }

 private:
  std::string cls_;
};
// Throws CommandError("InvalidArgument", ...).
[[noreturn]] void invalid_argument(const std::string& desc);

struct CommandReply {
  CommandReply(nlohmann::json r = nlohmann::json::object(), std::function<void()> a = nullptr)
      : ret(std::move(r)), after(std::move(a)) {}
  nlohmann::json ret;
  std::function<void()> after;  // runs once the reply has been sent (stop, reset)
};

class MachineCommands : public CommandHandler {
 public:
  using Command = std::function<CommandReply(const nlohmann::json& args)>;

  explicit MachineCommands(Machine& m);  // the built-in commands, and the balloon's when there is one
  CommandResult handle(const std::string& line) override;
  void add_command(const std::string& name, Command fn) { commands_[name] = std::move(fn); }

 private:
  Machine& m_;
  std::map<std::string, Command> commands_;
};

// Registration of the optional command sets (their own files).
void add_balloon_commands(MachineCommands& cmds, Machine& m);
void add_snapshot_commands(MachineCommands& cmds, Machine& m);  // snapshot.cpp

}  // namespace vireo::vmm
