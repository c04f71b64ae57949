// Host interface verbs (virsh's): iface-list, iface-dumpxml, iface-define, iface-undefine, iface-start,
// iface-destroy, iface-bridge, iface-unbridge, iface-mac, iface-name.
#include <algorithm>
#include <cstdio>

#include "cli/cli.h"
#include "cli/format.h"

namespace vireo::cli {

namespace {
using client::ClientError;
using nlohmann::json;

json call_or(Cli& cli, const std::string& method, const json& params, std::vector<std::string> head) {
  try {
    return cli.c().call(method, params);
  } catch (const ClientError& e) {
    if (e.code() == ClientError::kConnect) cmd_fail({e.what()});
    head.push_back(e.what());
    cmd_fail(head);
  }
}
void say(Cli& cli, const std::string& s) {
  if (!cli.quiet) std::printf("%s\n", s.c_str());
}
}  // namespace

void add_interface_verbs(Verbs& v) {
  Cli& cli = v.cli();
  struct Opts {
    std::string iface, file, bridge;
    bool all = false, inactive = false, no_stp = false, no_start = false;
    unsigned delay = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* list = v.add("iface-list", "list physical host interfaces", [&cli, o] {
    std::vector<std::vector<std::string>> rows = {{"Name", "State", "MAC Address"}};
    json all = cli.c().call("iface-list");
    std::vector<json> sorted(all.begin(), all.end());
    std::sort(sorted.begin(), sorted.end(), [](const json& a, const json& b) { return a.value("name", "") < b.value("name", ""); });
    for (const json& i : sorted) {
      const bool active = i.value("active", false);
      if (o->inactive && active) continue;
      if (!o->all && !o->inactive && !active) continue;
      rows.push_back({i.value("name", ""), active ? "active" : "inactive", i.value("mac", "")});
    }
    write_stdout(format_table(rows, cli.quiet));
    return 0;
  });
  list->add_flag("--all", o->all, "list inactive & active interfaces");
  list->add_flag("--inactive", o->inactive, "list inactive interfaces");
  auto arg = [o](CLI::App* s) {
    s->add_option("interface", o->iface, "interface name or MAC address")->required();
    return s;
  };
  arg(v.add("iface-dumpxml", "interface information in XML", [&cli, o] {
    write_stdout(call_or(cli, "iface-dumpxml", {{"interface", o->iface}, {"inactive", o->inactive}}, {"failed to get interface '" + o->iface + "'"})
                     .value("xml", ""));
    return 0;
  }))->add_flag("--inactive", o->inactive, "show inactive defined XML");
  v.add("iface-define", "define an inactive persistent physical host interface or modify an existing persistent one from an XML file",
        [&cli, o] {
          json r = call_or(cli, "iface-define", {{"xml", read_xml_file(o->file)}}, {"Failed to define interface from " + o->file});
          say(cli, "Interface " + r.value("name", "") + " defined from " + o->file);
          return 0;
        })
      ->add_option("file", o->file, "file containing an XML interface description")
      ->required();
  struct Act {
    const char* verb;
    const char* help;
    const char* fail;
    const char* done;
  };
  for (const Act& a : {Act{"iface-start", "start a physical host interface (enable it / \"if-up\")", "Failed to start interface ", " started"},
                       Act{"iface-destroy", "destroy a physical host interface (disable it / \"if-down\")", "Failed to destroy interface ", " destroyed"},
                       Act{"iface-undefine", "undefine a physical host interface (remove it from configuration)", "Failed to undefine interface ", " undefined"}}) {
    arg(v.add(a.verb, a.help, [&cli, o, a] {
      call_or(cli, a.verb, {{"interface", o->iface}}, {a.fail + o->iface});
      say(cli, "Interface " + o->iface + a.done);
      return 0;
    }));
  }
  auto* br = arg(v.add("iface-bridge", "create a bridge device and attach an existing network device to it", [&cli, o] {
    json r = call_or(cli, "iface-bridge",
                     {{"interface", o->iface}, {"bridge", o->bridge}, {"no_stp", o->no_stp}, {"delay", o->delay}, {"no_start", o->no_start}},
                     {"Failed to define new bridge interface " + o->bridge});
    say(cli, "Created bridge " + o->bridge + " with attached device " + o->iface);
    if (r.value("started", false)) say(cli, "Bridge interface " + o->bridge + " started");
    return 0;
  }));
  br->add_option("bridge", o->bridge, "new bridge device name")->required();
  br->add_flag("--no-stp", o->no_stp, "do not enable STP for this bridge");
  br->add_option("--delay", o->delay, "number of seconds to squelch traffic on newly connected ports");
  br->add_flag("--no-start", o->no_start, "don't start the bridge immediately");
  v.add("iface-unbridge", "undefine a bridge device after detaching its device(s)", [&cli, o] {
     json r = call_or(cli, "iface-unbridge", {{"bridge", o->bridge}}, {"Failed to undefine bridge interface " + o->bridge});
     const std::string nic = r.value("interface", "");
     say(cli, "Device " + nic + " un-attached from bridge " + o->bridge);
     say(cli, "Interface " + nic + " started");
     return 0;
   })->add_option("bridge", o->bridge, "current bridge device name")->required();
}

}  // namespace vireo::cli
