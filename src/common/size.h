// vireo/common: byte sizes as users type them ("64M", "1G", "512k", "4096").
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace vireo {

// Parses a size with an optional binary suffix: k/K, M, G, T, P, E (powers of 1024), optionally followed
// by "B"/"iB" ("64MiB"). A bare number is `default_unit` bytes-multiplier (1 = bytes). Throws Error naming
// the text on junk, overflow or a negative value.
uint64_t parse_size(std::string_view text, uint64_t default_unit = 1);

// "64 MiB", "1 GiB", "512 B": for messages and info output.
std::string format_size(uint64_t bytes);

}  // namespace vireo
