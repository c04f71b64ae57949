// vireo-img: command-line side of the formats beyond raw/qcow2 (luks, vmdk, vhdx, vpc, vdi, qed) and of
// qcow2's encrypt.* options: -o parsing and validation, the "Formatting ..." line and `-o help` in qemu 7.2's
// order and wording, and `info` for images that offer block::ImageDetails.
#include "img/formats_cli.h"

#include <algorithm>
#include <cstring>

#include "block/formats.h"
#include "common/error.h"
#include "img/img.h"

namespace vireo::img {

namespace {

enum class T { Str, Bool, Size, Num };
struct Opt {
  const char* name;
  T type;
  const char* help;
  const char* def = nullptr;   // printed in the Formatting line even when not given
};

// Each format's options in qemu's create_opts order (which is the Formatting line's order); -o help sorts.
const std::vector<Opt>& options_of(const std::string& fmt) {
  static const std::vector<Opt> vmdk = {
      {"size", T::Size, "Virtual disk size"},
      {"adapter_type", T::Str, "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX"},
      {"backing_file", T::Str, "File name of a base image"},
      {"backing_fmt", T::Str, "Must be 'vmdk' if present"},
      {"compat6", T::Bool, "VMDK version 6 image", "off"},
      {"hwversion", T::Str, "VMDK hardware version", "undefined"},
      {"toolsversion", T::Str, "VMware guest tools version"},
      {"subformat", T::Str,
       "VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse "
       "| twoGbMaxExtentFlat | streamOptimized} "},
      {"zeroed_grain", T::Bool, "Enable efficient zero writes using the zeroed-grain GTE feature"},
  };
  static const std::vector<Opt> vhdx = {
      {"size", T::Size, "Virtual disk size; max of 64TB."},
      {"log_size", T::Size, "Log size; min 1MB.", "1048576"},
      {"block_size", T::Size, "Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.", "0"},
      {"subformat", T::Str, "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'."},
      {"block_state_zero", T::Bool,
       "Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set to 'off' when using "
       "'qemu-img convert' with subformat=dynamic."},
  };
  static const std::vector<Opt> vpc = {
      {"size", T::Size, "Virtual disk size"},
      {"subformat", T::Str, "Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} "},
      {"force_size", T::Bool,
       "Force disk size calculation to use the actual size specified, rather than using the nearest CHS-based "
       "calculation"},
  };
  static const std::vector<Opt> vdi = {
      {"size", T::Size, "Virtual disk size"},
      {"static", T::Bool, "VDI static (pre-allocated) image", "off"},
  };
  static const std::vector<Opt> qed = {
      {"size", T::Size, "Virtual disk size"},
      {"backing_file", T::Str, "File name of a base image"},
      {"backing_fmt", T::Str, "Image format of the base image"},
      {"cluster_size", T::Size, "Cluster size (in bytes)", "65536"},
      {"table_size", T::Size, "L1/L2 table size (in clusters)"},
  };
  static const std::vector<Opt> luks = {
      {"size", T::Size, "Virtual disk size"},
      {"key-secret", T::Str, "ID of the secret that provides the keyslot passphrase"},
      {"cipher-alg", T::Str, "Name of encryption cipher algorithm"},
      {"cipher-mode", T::Str, "Name of encryption cipher mode"},
      {"ivgen-alg", T::Str, "Name of IV generator algorithm"},
      {"ivgen-hash-alg", T::Str, "Name of IV generator hash algorithm"},
      {"hash-alg", T::Str, "Name of encryption hash algorithm"},
      {"iter-time", T::Num, "Time to spend in PBKDF in milliseconds"},
  };
  static const std::vector<Opt> none;
  if (fmt == "vmdk") return vmdk;
  if (fmt == "vhdx") return vhdx;
  if (fmt == "vpc") return vpc;
  if (fmt == "vdi") return vdi;
  if (fmt == "qed") return qed;
  if (fmt == "luks") return luks;
  return none;
}

// Options of the file layer, merged by qemu 7.2 into every format's list (printed after the format's own).
const std::vector<Opt>& protocol_options() {
  static const std::vector<Opt> p = {
      {"preallocation", T::Str, "Preallocation mode (allowed values: off, falloc, full)"},
      {"nocow", T::Bool, "Turn off copy-on-write (valid only on btrfs)"},
      {"extent_size_hint", T::Size, "Extent size hint for the image file, 0 to disable"},
  };
  return p;
}

void check_value(const Opt& o, const std::string& v) {
  switch (o.type) {
    case T::Str: break;
    case T::Bool:
      if (v != "on" && v != "off" && v != "yes" && v != "no" && v != "true" && v != "false")
        fail("Parameter '{}' expects 'on' or 'off'", o.name);
      break;
    case T::Size:
      try {
        parse_qemu_size(v);
      } catch (const Error&) {
        fail("Parameter '{}' expects a non-negative number below 2^64\n"
             "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
             "and exabytes, respectively.", o.name);
      }
      break;
    case T::Num: {
      char* end = nullptr;
      std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end || v[0] == '-') fail("Parameter '{}' expects a number", o.name);
      break;
    }
  }
}

const Opt* find_opt(const std::vector<Opt>& list, const std::string& k) {
  for (const auto& o : list)
    if (k == o.name) return &o;
  return nullptr;
}

// qcow2's encryption options, in qemu's order.
const std::vector<Opt>& qcow2_encrypt_options() {
  static const std::vector<Opt> e = {
      {"encryption", T::Bool, ""},           {"encrypt.format", T::Str, ""},
      {"encrypt.key-secret", T::Str, ""},    {"encrypt.cipher-alg", T::Str, ""},
      {"encrypt.cipher-mode", T::Str, ""},   {"encrypt.ivgen-alg", T::Str, ""},
      {"encrypt.ivgen-hash-alg", T::Str, ""}, {"encrypt.hash-alg", T::Str, ""},
      {"encrypt.iter-time", T::Num, ""},
  };
  return e;
}

std::string str_of(const nlohmann::ordered_json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

}  // namespace

bool is_foreign_cli_format(const std::string& fmt) { return block::is_foreign_format(fmt); }

block::CreateOptions foreign_create_options(const std::string& fmt, const OptionList& opts) {
  block::CreateOptions c;
  c.format = fmt;
  const auto& list = options_of(fmt);
  for (const auto& [k, v] : opts.items) {
    const Opt* o = find_opt(list, k);
    const Opt* p = find_opt(protocol_options(), k);
    if (!o && !p) fail("Invalid parameter '{}'", k);
    check_value(o ? *o : *p, v);
    if (k == "size") c.size = parse_qemu_size(v);
    else if (k == "backing_file") c.backing_file = v;
    else if (k == "backing_fmt") c.backing_format = v;
    else if (k == "preallocation") {
      if (v != "off" && v != "falloc" && v != "full") fail("Parameter 'preallocation' does not accept value '{}'", v);
      c.preallocation = v;
    } else if (p) {
      // nocow / extent_size_hint: file-system hints without effect here.
    } else {
      c.extra.emplace_back(k, v);
    }
  }
  return c;
}

bool take_qcow2_encrypt_option(block::CreateOptions& c, const std::string& k, const std::string& v) {
  const Opt* o = find_opt(qcow2_encrypt_options(), k);
  if (!o) return false;
  check_value(*o, v);
  c.extra.emplace_back(k, v);
  return true;
}

std::string qcow2_encrypt_formatting(const OptionList& given) {
  std::string s;
  for (const auto& o : qcow2_encrypt_options())
    if (auto v = given.get(o.name)) s += fmt::format(" {}={}", o.name, *v);
  return s;
}

std::string foreign_formatting_line(const std::string& filename, const block::CreateOptions& c,
                                    const OptionList& given) {
  std::string s = fmt::format("Formatting '{}', fmt={}", filename, c.format);
  for (const auto& o : options_of(c.format)) {
    const std::string name = o.name;
    if (name == "size") {
      s += fmt::format(" size={}", c.size);
    } else if (name == "backing_file" && !c.backing_file.empty()) {
      s += " backing_file=" + c.backing_file;
    } else if (name == "backing_fmt" && !c.backing_format.empty()) {
      s += " backing_fmt=" + c.backing_format;
    } else if (auto v = given.get(name)) {
      // qemu prints sizes normalized to bytes
      if (o.type == T::Size) s += fmt::format(" {}={}", name, parse_qemu_size(*v));
      else if (name != "backing_file" && name != "backing_fmt") s += fmt::format(" {}={}", name, *v);
    } else if (o.def) {
      s += fmt::format(" {}={}", name, o.def);
    }
  }
  for (const auto& o : protocol_options())
    if (auto v = given.get(o.name)) s += fmt::format(" {}={}", o.name, *v);
  return s;
}

std::string foreign_option_help(const std::string& fmt) {
  std::vector<Opt> all = options_of(fmt);
  for (const auto& p : protocol_options()) all.push_back(p);
  std::sort(all.begin(), all.end(), [](const Opt& a, const Opt& b) { return std::strcmp(a.name, b.name) < 0; });
  std::string out = "Supported options:\n";
  for (const auto& o : all) {
    const char* type = o.type == T::Str ? "str" : o.type == T::Bool ? "bool (on/off)" : o.type == T::Size ? "size" : "num";
    out += fmt::format("  {:<22} - {}\n", fmt::format("{}=<{}>", o.name, type), o.help);
  }
  return out;
}

void add_image_details(nlohmann::ordered_json& j, block::BlockImage& img) {
  auto* d = dynamic_cast<block::ImageDetails*>(&img);
  if (!d) return;
  // Rebuild in qemu's member order: virtual-size filename cluster-size format actual-size
  // format-specific encrypted backing... dirty-flag.
  nlohmann::ordered_json out;
  const std::string bf = d->backing_file_name();
  if (!bf.empty() && !d->backing_file_format().empty()) out["backing-filename-format"] = d->backing_file_format();
  out["virtual-size"] = j["virtual-size"];
  out["filename"] = j["filename"];
  if (auto cs = d->cluster_size()) out["cluster-size"] = *cs;
  out["format"] = j["format"];
  out["actual-size"] = j["actual-size"];
  auto fs = d->format_specific();
  if (!fs.is_null()) out["format-specific"] = fs;
  if (!bf.empty()) {
    out["full-backing-filename"] = block::resolve_backing_path(img.filename(), bf);
    out["backing-filename"] = bf;
  }
  if (d->encrypted()) out["encrypted"] = true;
  out["dirty-flag"] = j.contains("dirty-flag") ? j["dirty-flag"] : nlohmann::ordered_json(false);
  j = out;
}

uint64_t foreign_write_granularity(block::BlockImage& target) {
  auto* d = dynamic_cast<block::ImageDetails*>(&target);
  if (!d || target.format() != "vmdk") return 0;
  return d->cluster_size().value_or(0);
}

bool target_has_zero_init(block::BlockImage& target) {
  auto* d = dynamic_cast<block::ImageDetails*>(&target);
  return !d || d->has_zero_init();
}

std::string qapi_human(const nlohmann::ordered_json& v, int indent) {
  std::string out;
  const std::string pad(static_cast<size_t>(indent), ' ');
  if (v.is_object()) {
    for (const auto& [k, x] : v.items()) {
      std::string name = k;
      std::replace(name.begin(), name.end(), '-', ' ');
      if (x.is_object() || x.is_array()) out += pad + name + ":\n" + qapi_human(x, indent + 4);
      else out += pad + name + ": " + str_of(x) + "\n";
    }
  } else if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i) {
      const auto& x = v[i];
      if (x.is_object() || x.is_array()) out += pad + fmt::format("[{}]:\n", i) + qapi_human(x, indent + 4);
      else out += pad + fmt::format("[{}]: ", i) + str_of(x) + "\n";
    }
  }
  return out;
}

}  // namespace vireo::img
