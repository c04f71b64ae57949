#include "cli/format.h"

#include <fmt/format.h>

#include <algorithm>

namespace vireo::cli {

namespace {
// Display width: count UTF-8 code points (no double-width handling; domain names are usually ASCII).
size_t width(const std::string& s) {
  size_t w = 0;
  for (unsigned char c : s)
    if ((c & 0xc0) != 0x80) ++w;
  return w;
}
}  // namespace

std::string format_table(const std::vector<std::vector<std::string>>& rows) {
  if (rows.empty()) return "";
  const size_t ncol = rows[0].size();
  std::vector<size_t> maxw(ncol, 0);
  for (const auto& r : rows)
    for (size_t i = 0; i < ncol && i < r.size(); ++i) maxw[i] = std::max(maxw[i], width(r[i]));
  std::string out;
  auto row = [&](const std::vector<std::string>& r) {
    for (size_t i = 0; i < ncol; ++i) {
      const std::string cell = i < r.size() ? r[i] : "";
      out += ' ';
      out += cell;
      if (i + 1 < ncol) out.append(maxw[i] - width(cell) + 2, ' ');
    }
    out += '\n';
  };
  row(rows[0]);
  for (size_t i = 0; i < ncol; ++i) out.append(maxw[i] + 3, '-');
  out += '\n';
  for (size_t i = 1; i < rows.size(); ++i) row(rows[i]);
  return out;
}

std::string format_table_quiet(const std::vector<std::vector<std::string>>& rows) {
  if (rows.size() <= 1) return "";
  const size_t ncol = rows[0].size();
  std::vector<size_t> maxw(ncol, 0);
  for (size_t r = 1; r < rows.size(); ++r)
    for (size_t i = 0; i < ncol && i < rows[r].size(); ++i) maxw[i] = std::max(maxw[i], width(rows[r][i]));
  std::string out;
  for (size_t r = 1; r < rows.size(); ++r) {
    for (size_t i = 0; i < ncol; ++i) {
      const std::string cell = i < rows[r].size() ? rows[r][i] : "";
      out += ' ';
      out += cell;
      if (i + 1 < ncol) out.append(maxw[i] - width(cell) + 2, ' ');
    }
    out += '\n';
  }
  return out;
}

std::string format_list(const std::vector<client::DomainSummary>& doms, bool quiet) {
  std::vector<std::vector<std::string>> rows = {{"Id", "Name", "State"}};
  for (const auto& d : doms) rows.push_back({d.active && d.id >= 0 ? std::to_string(d.id) : "-", d.name, d.state});
  return format_table(rows, quiet);
}

std::string format_dominfo(const client::DomainInfo& i) {
  std::string o;
  auto line = [&](const char* k, const std::string& v) { o += fmt::format("{:<15} {}\n", k, v); };
  line("Id:", i.active && i.id >= 0 ? std::to_string(i.id) : "-");
  line("Name:", i.name);
  line("UUID:", i.uuid);
  line("OS Type:", i.os_type);
  line("State:", i.state);
  line("CPU(s):", std::to_string(i.vcpus));
  if (i.cpu_time_ns) line("CPU time:", fmt::format("{:.1f}s", static_cast<double>(i.cpu_time_ns) / 1e9));
  line("Max memory:", std::to_string(i.max_memory_kib) + " KiB");
  line("Used memory:", std::to_string(i.used_memory_kib) + " KiB");
  line("Persistent:", i.persistent ? "yes" : "no");
  line("Autostart:", i.autostart ? "enable" : "disable");
  line("Managed save:", "no");
  return o;
}

}  // namespace vireo::cli
