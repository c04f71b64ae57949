// Host and hypervisor verbs (virsh's): uri, hostname, nodeinfo, capabilities, sysinfo. All ask the
// daemon (a remote connection reports the remote host).
#include <fmt/format.h>

#include <cstdio>

#include "cli/cli.h"
#include "cli/shell.h"

namespace vireo::cli {

namespace {
nlohmann::json ask(Cli& cli, const char* method) {
  try {
    return cli.c().call(method);
  } catch (const client::ClientError& e) {
    cmd_fail({e.what()});
  }
}
}  // namespace

void add_host_verbs(Verbs& v) {
  Cli& cli = v.cli();
  v.add("uri", "print the hypervisor canonical URI", [&cli] {
    std::printf("%s\n", cli.c().uri().text.c_str());
    return 0;
  });
  v.add("hostname", "print the hypervisor hostname", [&cli] {
    std::printf("%s\n", ask(cli, "hostname").value("hostname", "").c_str());
    return 0;
  });
  v.add("nodeinfo", "node information", [&cli] {
    auto n = ask(cli, "nodeinfo");
    auto line = [](const char* k, const std::string& val) { std::printf("%s", fmt::format("{:<20} {}\n", k, val).c_str()); };
    line("CPU model:", n.value("model", ""));
    line("CPU(s):", std::to_string(n.value("cpus", 0u)));
    line("CPU frequency:", std::to_string(n.value("mhz", 0u)) + " MHz");
    line("CPU socket(s):", std::to_string(n.value("sockets", 0u)));
    line("Core(s) per socket:", std::to_string(n.value("cores", 0u)));
    line("Thread(s) per core:", std::to_string(n.value("threads", 0u)));
    line("NUMA cell(s):", std::to_string(n.value("nodes", 0u)));
    line("Memory size:", std::to_string(n.value("memory_kib", uint64_t{0})) + " KiB");
    return 0;
  })->footer("Returns basic information about the node, like number and type of CPU, and size of the physical memory.");
  v.add("capabilities", "capabilities", [&cli] {
    write_stdout(ask(cli, "capabilities").value("xml", ""));
    return 0;
  })->footer("Returns capabilities of hypervisor/driver.");
  v.add("sysinfo", "print the hypervisor sysinfo", [&cli] {
    write_stdout(ask(cli, "sysinfo").value("xml", ""));
    return 0;
  })->footer("output an XML string for the hypervisor sysinfo, if available");
}

}  // namespace vireo::cli
