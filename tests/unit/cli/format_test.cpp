// `vireo list` / `vireo dominfo` layouts, pinned byte for byte against virsh's (tools/vsh-table.c rules:
// " " + cell, padded to the widest cell + 2 spaces except in the last column; divider = widest + 3 per column).
#include <gtest/gtest.h>

#include "cli/format.h"

using vireo::cli::format_dominfo;
using vireo::cli::format_list;
using vireo::cli::format_table;
using vireo::client::DomainInfo;
using vireo::client::DomainSummary;

namespace {

DomainSummary dom(int id, const std::string& name, const std::string& state) {
  DomainSummary d;
  d.id = id;
  d.active = id >= 0;
  d.name = name;
  d.state = state;
  return d;
}

TEST(ListFormat, EmptyMatchesVirsh) {
  // `virsh list` with no domains.
  EXPECT_EQ(format_list({}), " Id   Name   State\n--------------------\n");
}

TEST(ListFormat, AllStatesMatchesVirsh) {
  std::string want =
      " Id   Name          State\n"
      "---------------------------------\n"  // (2+3) + (11+3) + (11+3)
      " 1    web01         running\n"
      " 7    db            paused\n"
      " 12   batch         in shutdown\n"
      " -    build-agent   shut off\n"
      " -    crashy        crashed\n";
  EXPECT_EQ(format_list({dom(1, "web01", "running"), dom(7, "db", "paused"), dom(12, "batch", "in shutdown"),
                         dom(-1, "build-agent", "shut off"), dom(-1, "crashy", "crashed")}),
            want);
}

TEST(ListFormat, SingleShutOff) {
  EXPECT_EQ(format_list({dom(-1, "demo", "shut off")}),
            " Id   Name   State\n"
            "-----------------------\n"
            " -    demo   shut off\n");
}

TEST(ListFormat, WideIdColumn) {
  EXPECT_EQ(format_list({dom(12345, "a", "running")}),
            " Id      Name   State\n"
            "-------------------------\n"
            " 12345   a      running\n");
}

TEST(TableFormat, LastColumnIsNotPadded) {
  EXPECT_EQ(format_table({{"A", "B"}, {"xxxx", "y"}, {"z", "wwwwww"}}),
            " A      B\n"
            "----------------\n"  // (4+3) + (6+3)
            " xxxx   y\n"
            " z      wwwwww\n");
}

TEST(DominfoFormat, RunningDomain) {
  DomainInfo i;
  i.id = 3;
  i.active = true;
  i.name = "web01";
  i.uuid = "6f1c6e3a-2b7d-4c59-9e0b-5a7d2c8e4f10";
  i.os_type = "hvm";
  i.state = "running";
  i.vcpus = 2;
  i.cpu_time_ns = 1250000000;
  i.max_memory_kib = 1048576;
  i.used_memory_kib = 524288;
  i.persistent = true;
  i.autostart = true;
  EXPECT_EQ(format_dominfo(i),
            "Id:             3\n"
            "Name:           web01\n"
            "UUID:           6f1c6e3a-2b7d-4c59-9e0b-5a7d2c8e4f10\n"
            "OS Type:        hvm\n"
            "State:          running\n"
            "CPU(s):         2\n"
            "CPU time:       1.2s\n"
            "Max memory:     1048576 KiB\n"
            "Used memory:    524288 KiB\n"
            "Persistent:     yes\n"
            "Autostart:      enable\n"
            "Managed save:   no\n");
}

TEST(DominfoFormat, ShutOffDomainHasNoCpuTime) {
  DomainInfo i;
  i.name = "x";
  i.uuid = "u";
  i.os_type = "hvm";
  i.state = "shut off";
  i.vcpus = 1;
  i.max_memory_kib = i.used_memory_kib = 65536;
  std::string s = format_dominfo(i);
  EXPECT_EQ(s.substr(0, 19), "Id:             -\nN");
  EXPECT_EQ(s.find("CPU time"), std::string::npos);
  EXPECT_NE(s.find("Persistent:     no\nAutostart:      disable\n"), std::string::npos);
}

}  // namespace
