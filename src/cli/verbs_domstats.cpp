// Domain monitoring verbs (virsh's): domiflist, domblklist, domstats, domblkstat, domifstat, vcpuinfo.
// The daemon gathers the numbers (domain XML, the VMM's threads, tap counters); this file lays them out
// as virsh does.
#include <fmt/format.h>

#include <cstdio>

#include "cli/cli.h"
#include "cli/format.h"
#include "cli/shell.h"

namespace vireo::cli {

namespace {

using client::ClientError;
using nlohmann::json;

std::string name_of(Cli& cli, const std::string& key) {
  try {
    return cli.c().lookup(key).name;
  } catch (const ClientError& e) {
    if (e.code() == ClientError::kConnect) cmd_fail({e.what()});
    cmd_fail({"failed to get domain '" + key + "'"});
  }
}

std::string dash(const std::string& s) { return s.empty() ? "-" : s; }

std::string value_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

}  // namespace

void add_domain_stats_verbs(Verbs& v) {
  Cli& cli = v.cli();
  struct Opts {
    std::string dom, dev;
    bool inactive = false, details = false, human = false, pretty = false;
    std::vector<std::string> doms;
    bool state = false, cpu = false, balloon = false, vcpu = false, iface = false, block = false;
    bool l_active = false, l_inactive = false, l_persistent = false, l_transient = false, l_running = false,
         l_paused = false, l_shutoff = false, l_other = false;
  };
  auto o = std::make_shared<Opts>();
  auto domain_arg = [o](CLI::App* s) {
    s->add_option("domain", o->dom, "domain name, id or uuid")->required();
    return s;
  };

  auto* iflist = domain_arg(v.add("domiflist", "list all domain virtual interfaces", [&cli, o] {
    const std::string name = name_of(cli, o->dom);
    json rows;
    try {
      rows = cli.c().call("domiflist", {{"domain", name}, {"inactive", o->inactive}});
    } catch (const ClientError& e) {
      cmd_fail({e.what()});
    }
    std::vector<std::vector<std::string>> t = {{"Interface", "Type", "Source", "Model", "MAC"}};
    for (const auto& r : rows)
      t.push_back({dash(r.value("interface", "")), dash(r.value("type", "")), dash(r.value("source", "")),
                   dash(r.value("model", "")), dash(r.value("mac", ""))});
    write_stdout(format_table(t));
    return 0;
  }));
  iflist->add_flag("--inactive", o->inactive, "get inactive rather than running configuration");
  iflist->footer("Get the summary of virtual interfaces for a domain.");

  auto* blklist = domain_arg(v.add("domblklist", "list all domain blocks", [&cli, o] {
    const std::string name = name_of(cli, o->dom);
    json rows;
    try {
      rows = cli.c().call("domblklist", {{"domain", name}, {"inactive", o->inactive}});
    } catch (const ClientError& e) {
      cmd_fail({e.what()});
    }
    std::vector<std::vector<std::string>> t;
    if (o->details) t.push_back({"Type", "Device", "Target", "Source"});
    else t.push_back({"Target", "Source"});
    for (const auto& r : rows) {
      if (o->details)
        t.push_back({r.value("type", ""), r.value("device", ""), r.value("target", ""), dash(r.value("source", ""))});
      else
        t.push_back({r.value("target", ""), dash(r.value("source", ""))});
    }
    write_stdout(format_table(t));
    return 0;
  }));
  blklist->add_flag("--inactive", o->inactive, "get inactive rather than running configuration");
  blklist->add_flag("--details", o->details, "additionally display the type and device value");
  blklist->footer("Get the summary of block devices for a domain.");

  auto* vcpu = domain_arg(v.add("vcpuinfo", "detailed domain vcpu information", [&cli, o] {
    const std::string name = name_of(cli, o->dom);
    json rows;
    try {
      rows = cli.c().call("vcpuinfo", {{"domain", name}});
    } catch (const ClientError& e) {
      cmd_fail({e.what()});
    }
    std::string out;
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      if (i) out += "\n";
      auto line = [&](const char* k, const std::string& val) { out += fmt::format("{:<15} {}\n", k, val); };
      line("VCPU:", std::to_string(r.value("vcpu", 0)));
      line("CPU:", std::to_string(r.value("cpu", -1)));
      line("State:", r.value("state", ""));
      line("CPU time:", fmt::format("{:.1f}s", static_cast<double>(r.value("time_ns", uint64_t{0})) / 1e9));
      line("CPU Affinity:", r.value("affinity", ""));
    }
    write_stdout(out);
    return 0;
  }));
  vcpu->add_flag("--pretty", o->pretty, "return human readable output");
  vcpu->footer("Returns basic information about the domain virtual CPUs.");

  auto* ifstat = domain_arg(v.add("domifstat", "get network interface stats for a domain", [&cli, o] {
    const std::string name = name_of(cli, o->dom);
    json st;
    try {
      st = cli.c().call("domifstat", {{"domain", name}, {"interface", o->dev}});
    } catch (const ClientError& e) {
      cmd_fail({"Failed to get interface stats " + name + " " + o->dev, e.what()});
    }
    for (const char* k : {"rx_bytes", "rx_packets", "rx_errs", "rx_drop", "tx_bytes", "tx_packets", "tx_errs", "tx_drop"})
      std::printf("%s %s %s\n", o->dev.c_str(), k, value_text(st[k]).c_str());
    return 0;
  }));
  ifstat->add_option("interface", o->dev, "interface device specified by name or MAC Address")->required();
  ifstat->footer("Get network interface stats for a running domain.");

  auto* blkstat = domain_arg(v.add("domblkstat", "get device block stats for a domain", [&cli, o] {
    const std::string name = name_of(cli, o->dom);
    json st;
    try {
      st = cli.c().call("domblkstat", {{"domain", name}, {"device", o->dev}});
    } catch (const ClientError& e) {
      cmd_fail({"Failed to get block stats " + name + " " + o->dev, e.what()});
    }
    for (const char* k : {"rd_req", "rd_bytes", "wr_req", "wr_bytes", "errs"})
      if (st.contains(k)) std::printf("%s %s %s\n", o->dev.c_str(), k, value_text(st[k]).c_str());
    return 0;
  }));
  blkstat->add_option("device", o->dev, "block device");
  blkstat->add_flag("--human", o->human, "print a more human readable output");
  blkstat->footer("Get device block stats for a running domain.");

  struct AddrOpts {
    std::string iface, source = "lease";
    bool full = false;
  };
  auto ao = std::make_shared<AddrOpts>();
  auto* ifaddr = domain_arg(v.add("domifaddr", "Get network interfaces' addresses for a running domain", [&cli, o, ao] {
    const std::string name = name_of(cli, o->dom);
    json rows;
    try {
      rows = cli.c().call("domifaddr", {{"domain", name}, {"source", ao->source}});
    } catch (const ClientError& e) {
      cmd_fail({"Failed to query for interfaces addresses", e.what()});
    }
    std::string out = fmt::format(" {:<10} {:<20} {:<12} {}\n", "Name", "MAC address", "Protocol", "Address");
    out += std::string(79, '-') + "\n";
    std::string last;
    for (const auto& r : rows) {
      const std::string n = r.value("name", "");
      if (!ao->iface.empty() && n != ao->iface) continue;
      // virsh names an interface once; its further addresses get "-" unless --full.
      const bool repeat = n == last && !ao->full;
      const std::string addr = r.value("address", "") + "/" + std::to_string(r.value("prefix", 0));
      out += fmt::format(" {:<10} {:<20} {:<12} {}\n", repeat ? "-" : dash(n), repeat ? "-" : r.value("mac", ""),
                         r.value("protocol", ""), addr);
      last = n;
    }
    write_stdout(out);
    return 0;
  }));
  ifaddr->add_option("--interface", ao->iface, "network interface name");
  ifaddr->add_flag("--full", ao->full, "always display names and MACs of interfaces");
  ifaddr->add_option("--source", ao->source, "address source: 'lease', 'agent', or 'arp'");
  ifaddr->footer("Get network interfaces' addresses for a running domain.");

  auto* stats = v.add("domstats", "get statistics about one or multiple domains", [&cli, o] {
    std::vector<std::string> names;
    try {
      if (o->doms.empty()) {
        for (const auto& d : cli.c().list()) {
          const bool other = d.state != "running" && d.state != "paused" && d.state != "shut off";
          if ((o->l_active && !d.active) || (o->l_inactive && d.active) || (o->l_persistent && !d.persistent) ||
              (o->l_transient && d.persistent))
            continue;
          if ((o->l_running || o->l_paused || o->l_shutoff || o->l_other) &&
              !((o->l_running && d.state == "running") || (o->l_paused && d.state == "paused") ||
                (o->l_shutoff && d.state == "shut off") || (o->l_other && other)))
            continue;
          names.push_back(d.name);
        }
      } else {
        for (const auto& d : o->doms) names.push_back(name_of(cli, d));
      }
    } catch (const ClientError& e) {
      cmd_fail({e.what()});
    }
    const bool all = !(o->state || o->cpu || o->balloon || o->vcpu || o->iface || o->block);
    auto wanted = [&](const std::string& key) {
      if (all) return true;
      auto group = key.substr(0, key.find('.'));
      return (o->state && group == "state") || (o->cpu && group == "cpu") || (o->balloon && group == "balloon") ||
             (o->vcpu && group == "vcpu") || (o->iface && group == "net") || (o->block && group == "block");
    };
    std::string out;
    for (size_t i = 0; i < names.size(); ++i) {
      json r;
      try {
        r = cli.c().call("domstats", {{"domain", names[i]}});
      } catch (const ClientError& e) {
        cmd_fail({e.what()});
      }
      if (i) out += "\n";
      out += "Domain: '" + names[i] + "'\n";
      for (const auto& kv : r["stats"])
        if (wanted(kv[0].get<std::string>())) out += "  " + kv[0].get<std::string>() + "=" + value_text(kv[1]) + "\n";
    }
    write_stdout(out);
    return 0;
  });
  stats->add_flag("--state", o->state, "report domain state");
  stats->add_flag("--cpu-total", o->cpu, "report domain physical cpu usage");
  stats->add_flag("--balloon", o->balloon, "report domain balloon statistics");
  stats->add_flag("--vcpu", o->vcpu, "report domain virtual cpu information");
  stats->add_flag("--interface", o->iface, "report domain network interface information");
  stats->add_flag("--block", o->block, "report domain block device statistics");
  stats->add_flag("--list-active", o->l_active, "list only active domains");
  stats->add_flag("--list-inactive", o->l_inactive, "list only inactive domains");
  stats->add_flag("--list-persistent", o->l_persistent, "list only persistent domains");
  stats->add_flag("--list-transient", o->l_transient, "list only transient domains");
  stats->add_flag("--list-running", o->l_running, "list only running domains");
  stats->add_flag("--list-paused", o->l_paused, "list only paused domains");
  stats->add_flag("--list-shutoff", o->l_shutoff, "list only shutoff domains");
  stats->add_flag("--list-other", o->l_other, "list only domains in other states");
  stats->add_option("domain", o->doms, "list of domains to get stats for");
  stats->footer("Gets statistics about one or more (or all) domains");
}

}  // namespace vireo::cli
