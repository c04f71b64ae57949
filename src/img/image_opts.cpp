// qemu's --image-opts for the images a subcommand reads: the image argument is an option list naming the
// format driver, the file, and the format's own options (the key secret of an encrypted image, which only
// this syntax can pass for a source). Texts are qemu-img 7.2's.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "block/block.h"
#include "common/error.h"
#include "img/cli.h"
#include "img/img.h"

namespace vireo::img {

namespace {

// QEMU prints a QDict in bucket order of its string hash (qobject/qdict.c, 512 buckets); json: file names
// come out in that order, so ours must too.
unsigned qdict_bucket(const std::string& key) {
  uint32_t v = 0x238F13AFu * static_cast<uint32_t>(key.size());
  for (size_t i = 0; i < key.size(); ++i)
    v += static_cast<uint32_t>(static_cast<unsigned char>(key[i])) << (i * 5 % 24);
  return (1103515243u * v + 12345u) % 512;
}

std::string qdict_json(const std::vector<std::pair<std::string, std::string>>& items) {
  auto sorted = items;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const auto& a, const auto& b) { return qdict_bucket(a.first) < qdict_bucket(b.first); });
  std::string out = "{";
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (i) out += ", ";
    out += nlohmann::json(sorted[i].first).dump() + ": ";
    // Nested dicts are passed pre-rendered (they start with '{').
    out += sorted[i].second.starts_with("{") ? sorted[i].second : nlohmann::json(sorted[i].second).dump();
  }
  return out + "}";
}

}  // namespace

std::string apply_image_opts(const std::string& arg, OpenSpec& spec) {
  const auto refuse = [&](const std::string& why) { die(fmt::format("Could not open '{}': {}", arg, why)); };
  if (arg.find('=') == std::string::npos)
    refuse(fmt::format("Cannot find device='{}' nor node-name='{}'", arg, arg));
  OptionList o;
  try {
    o = parse_option_list(arg);
  } catch (const Error& e) {
    refuse(e.what());
  }
  std::string driver, path, file_driver = "file";
  std::vector<std::pair<std::string, std::string>> format_opts;
  for (const auto& [k, v] : o.items) {   // later occurrences win, as in qemu
    if (k == "driver") driver = v;
    else if (k == "file.filename") path = v;
    else if (k == "file.driver") file_driver = v;
    else if (k.starts_with("file.")) refuse(fmt::format("--image-opts option '{}' is not supported by {}", k, prog()));
    else format_opts.emplace_back(k, v);
  }
  if (file_driver != "file")
    refuse(fmt::format("--image-opts file.driver={} is not supported by {}", file_driver, prog()));
  if (path.empty()) refuse("A block device must be specified for \"file\"");
  if (!driver.empty()) spec.format = driver;
  // The format's own options: the key secret of the two encrypted formats.
  std::string fmt_name = driver;
  if (fmt_name.empty() && !format_opts.empty()) {
    try {
      fmt_name = block::probe_format(path);
    } catch (const Error&) {
      fmt_name = "raw";
    }
  }
  for (const auto& [k, v] : format_opts) {
    if ((fmt_name == "luks" && k == "key-secret") || (fmt_name == "qcow2" && k == "encrypt.key-secret"))
      spec.key_secret = v;
    else
      refuse(fmt::format("Block format '{}' does not support the option '{}'", fmt_name, k));
  }
  spec.opts_name = arg;   // error messages name the image by the whole option string
  // How qemu names the image: its file name, or json:{...} when options beyond driver and file remain.
  if (format_opts.empty()) return path;
  auto items = format_opts;
  items.emplace_back("driver", fmt_name);
  items.emplace_back("file", qdict_json({{"driver", "file"}, {"filename", path}}));
  spec.display_name = "json:" + qdict_json(items);
  return path;
}

}  // namespace vireo::img
