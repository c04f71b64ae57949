// vireo CLI output formats that must match virsh byte for byte (pinned by golden tests).
#pragma once
#include <string>
#include <vector>

#include "client/client.h"

namespace vireo::cli {

// virsh's table (vsh-table): every cell is " " + text, padded to the column's widest cell (header
// included) plus two spaces, except that the last column is not padded; the divider is one '-' per
// column character including that whitespace (widest + 3 per column).
std::string format_table(const std::vector<std::vector<std::string>>& rows_with_header);
// virsh -q: the same table without the header and divider, widths from the data rows only.
std::string format_table_quiet(const std::vector<std::vector<std::string>>& rows_with_header);
// The one the -q flag picks.
inline std::string format_table(const std::vector<std::vector<std::string>>& rows, bool quiet) {
  return quiet ? format_table_quiet(rows) : format_table(rows);
}

// `virsh list` table rows (Id, Name, State) for these domains, in the given order.
std::string format_list(const std::vector<client::DomainSummary>& doms, bool quiet = false);

// `virsh dominfo` block.
std::string format_dominfo(const client::DomainInfo& info);

}  // namespace vireo::cli
