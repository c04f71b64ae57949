// Virtual network verbs (virsh's): net-list, net-define, net-create, net-start, net-destroy, net-undefine,
// net-info, net-dumpxml, net-edit, net-autostart, net-dhcp-leases, net-update, net-uuid, net-name.
#include <ctime>
#include <cstdio>

#include "cli/cli.h"
#include "cli/format.h"

namespace vireo::cli {

namespace {

using client::ClientError;
using nlohmann::json;

json get_net(Cli& cli, const std::string& key) {
  try {
    return cli.c().call("net-lookup", {{"network", key}});
  } catch (const ClientError& e) {
    if (e.code() == ClientError::kConnect) cmd_fail({e.what()});
    cmd_fail({"failed to get network '" + key + "'", e.what()});
  }
}

// A call on a network: `fail_line` (e.g. "Failed to start network x") heads the error.
json net_call(Cli& cli, const std::string& method, json params, const std::string& fail_line) {
  try {
    return cli.c().call(method, params);
  } catch (const ClientError& e) {
    if (fail_line.empty()) cmd_fail({e.what()});
    cmd_fail({fail_line, e.what()});
  }
}

void say(Cli& cli, const std::string& s) {
  if (!cli.quiet) std::printf("%s\n", s.c_str());
}

}  // namespace

void add_network_verbs(Verbs& v) {
  Cli& cli = v.cli();
  struct Opts {
    std::string net, file, mac, command, section, xml;
    bool all = false, inactive = false, persistent = false, transient = false, autostart = false, no_autostart = false,
         name = false, uuid = false, disable = false, live = false, config = false, current = false;
    unsigned parent_index = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* list = v.add("net-list", "list networks", [&cli, o] {
    std::vector<std::vector<std::string>> rows = {{"Name", "State", "Autostart", "Persistent"}};
    json all = cli.c().call("net-list");
    for (const json& n : all) {
      const bool active = n.value("active", false);
      if (o->inactive && active) continue;
      if (!o->all && !o->inactive && !active) continue;
      if (o->persistent && !n.value("persistent", false)) continue;
      if (o->transient && n.value("persistent", false)) continue;
      if (o->autostart && !n.value("autostart", false)) continue;
      if (o->no_autostart && n.value("autostart", false)) continue;
      if (o->name || o->uuid) {
        if (o->uuid && o->name) std::printf("%s %s\n", n.value("uuid", "").c_str(), n.value("name", "").c_str());
        else std::printf("%s\n", (o->uuid ? n.value("uuid", "") : n.value("name", "")).c_str());
        continue;
      }
      rows.push_back({n.value("name", ""), active ? "active" : "inactive", n.value("autostart", false) ? "yes" : "no",
                      n.value("persistent", false) ? "yes" : "no"});
    }
    if (!o->name && !o->uuid) {
      write_stdout(format_table(rows, cli.quiet));
    }
    return 0;
  });
  list->add_flag("--all", o->all, "list inactive & active networks");
  list->add_flag("--inactive", o->inactive, "list inactive networks");
  list->add_flag("--persistent", o->persistent, "list persistent networks");
  list->add_flag("--transient", o->transient, "list transient networks");
  list->add_flag("--autostart", o->autostart, "list networks with autostart enabled");
  list->add_flag("--no-autostart", o->no_autostart, "list networks with autostart disabled");
  list->add_flag("--name", o->name, "list network names only");
  list->add_flag("--uuid", o->uuid, "list uuid's only");
  list->add_flag("--table", o->current, "list table (default)");

  for (bool create : {false, true}) {
    v.add(create ? "net-create" : "net-define", create ? "create a network from an XML file" : "define an inactive persistent virtual network",
          [&cli, o, create] {
            const std::string xml = read_xml_file(o->file);
            json r = net_call(cli, create ? "net-create" : "net-define", {{"xml", xml}},
                              std::string(create ? "Failed to create network from " : "Failed to define network from ") + o->file);
            say(cli, "Network " + r.value("name", "") + (create ? " created from " : " defined from ") + o->file);
            return 0;
          })
        ->add_option("file", o->file, "file containing an XML network description")
        ->required();
  }
  auto net_arg = [o](CLI::App* s) {
    s->add_option("network", o->net, "network name or uuid")->required();
    return s;
  };
  struct Act {
    const char* verb;
    const char* method;
    const char* help;
    const char* fail;
    const char* done;
  };
  for (const Act& a : {Act{"net-start", "net-start", "start a (previously defined) inactive network", "Failed to start network ", " started"},
                       Act{"net-destroy", "net-destroy", "destroy (stop) a network", "Failed to destroy network ", " destroyed"},
                       Act{"net-undefine", "net-undefine", "undefine a persistent network", "Failed to undefine network ", " has been undefined"}}) {
    net_arg(v.add(a.verb, a.help, [&cli, o, a] {
      const std::string name = get_net(cli, o->net).value("name", "");
      net_call(cli, a.method, {{"network", name}}, a.fail + name);
      say(cli, "Network " + name + a.done);
      return 0;
    }));
  }
  net_arg(v.add("net-info", "network information", [&cli, o] {
    const std::string name = get_net(cli, o->net).value("name", "");
    json i = net_call(cli, "net-info", {{"network", name}}, "");
    auto line = [](const char* k, const std::string& val) { std::printf("%-15s %s\n", k, val.c_str()); };
    line("Name:", i.value("name", ""));
    line("UUID:", i.value("uuid", ""));
    line("Active:", i.value("active", false) ? "yes" : "no");
    line("Persistent:", i.value("persistent", false) ? "yes" : "no");
    line("Autostart:", i.value("autostart", false) ? "yes" : "no");
    line("Bridge:", i.value("bridge", ""));
    return 0;
  }));
  net_arg(v.add("net-uuid", "convert a network name to network UUID", [&cli, o] {
    std::printf("%s\n", get_net(cli, o->net).value("uuid", "").c_str());
    return 0;
  }));
  net_arg(v.add("net-name", "convert a network UUID to network name", [&cli, o] {
    std::printf("%s\n", get_net(cli, o->net).value("name", "").c_str());
    return 0;
  }));
  net_arg(v.add("net-dumpxml", "network information in XML", [&cli, o] {
    const std::string name = get_net(cli, o->net).value("name", "");
    write_stdout(net_call(cli, "net-dumpxml", {{"network", name}, {"inactive", o->inactive}}, "").value("xml", ""));
    return 0;
  }))->add_flag("--inactive", o->inactive, "show inactive defined XML");
  net_arg(v.add("net-edit", "edit XML configuration for a network", [&cli, o] {
    const std::string name = get_net(cli, o->net).value("name", "");
    const std::string xml = net_call(cli, "net-dumpxml", {{"network", name}, {"inactive", true}}, "").value("xml", "");
    auto edited = cli.edit_text(xml);
    if (!edited) {
      std::printf("Network %s XML configuration not changed.\n", name.c_str());
      return 0;
    }
    try {
      cli.c().call("net-define", {{"xml", *edited}});
    } catch (const ClientError& e) {
      cmd_fail({e.what(), "Failed. The definition of network '" + name + "' was not changed."});
    }
    std::printf("Network %s XML configuration edited.\n", name.c_str());
    return 0;
  }));
  net_arg(v.add("net-autostart", "autostart a network", [&cli, o] {
    const std::string name = get_net(cli, o->net).value("name", "");
    net_call(cli, "net-autostart", {{"network", name}, {"enable", !o->disable}},
             std::string("failed to ") + (o->disable ? "unmark" : "mark") + " network " + name + " as autostarted");
    say(cli, "Network " + name + (o->disable ? " unmarked" : " marked") + " as autostarted");
    return 0;
  }))->add_flag("--disable", o->disable, "disable autostarting");
  auto* leases = net_arg(v.add("net-dhcp-leases", "print lease info for a given network", [&cli, o] {
    const std::string name = get_net(cli, o->net).value("name", "");
    json ls = net_call(cli, "net-dhcp-leases", {{"network", name}, {"mac", o->mac}}, "Failed to get leases info for " + name);
    std::vector<std::vector<std::string>> rows = {
        {"Expiry Time", "MAC address", "Protocol", "IP address", "Hostname", "Client ID or DUID"}};
    auto dash = [](const std::string& s) { return s.empty() ? std::string("-") : s; };
    for (const json& l : ls) {
      const time_t t = static_cast<time_t>(l.value("expiry", 0LL));
      char when[64];
      struct tm tmv{};
      localtime_r(&t, &tmv);
      std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tmv);
      rows.push_back({when, dash(l.value("mac", "")), l.value("type", ""),
                      l.value("ip", "") + "/" + std::to_string(l.value("prefix", 0)), dash(l.value("hostname", "")),
                      dash(l.value("client_id", ""))});
    }
    write_stdout(format_table(rows, cli.quiet));
    return 0;
  }));
  leases->add_option("--mac", o->mac, "MAC address");
  auto* upd = net_arg(v.add("net-update", "update parts of an existing network's configuration", [&cli, o] {
    const std::string name = get_net(cli, o->net).value("name", "");
    std::string xml = o->xml;
    if (xml.find('<') == std::string::npos) xml = read_xml_file(xml);  // virsh: not XML -> a file name
    json r = net_call(cli, "net-update",
                      {{"network", name}, {"command", o->command}, {"section", o->section}, {"xml", xml},
                       {"parent_index", o->parent_index}, {"live", o->live}, {"config", o->config}},
                      "Failed to update network " + name);
    const bool live = r.value("live", false), config = r.value("config", false);
    if (config && live) say(cli, "Updated network " + name + " persistent config and live state");
    else if (config) say(cli, "Updated network " + name + " persistent config");
    else say(cli, "Updated network " + name + " live state");
    return 0;
  }));
  upd->add_option("command", o->command, "type of update (add-first, add-last (add), delete, or modify)")->required();
  upd->add_option("section", o->section, "which section of network configuration to update")->required();
  upd->add_option("xml", o->xml, "name of file containing xml (or, if it starts with '<', the complete xml element itself)")->required();
  upd->add_option("--parent-index", o->parent_index, "which parent object to search through");
  upd->add_flag("--live", o->live, "affect running network");
  upd->add_flag("--config", o->config, "affect next network startup");
  upd->add_flag("--current", o->current, "affect current state of network");
}

}  // namespace vireo::cli
