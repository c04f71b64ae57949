// vireo-img: the command-line side of the formats in block/formats.h and of qcow2's encrypt.* options.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "block/block.h"
#include "img/img.h"

namespace vireo::img {

bool is_foreign_cli_format(const std::string& fmt);
// -o for luks/vmdk/vhdx/vpc/vdi/qed: names and value syntax checked as qemu does ("Invalid parameter 'x'",
// "Parameter 'static' expects 'on' or 'off'"); format-specific ones go to CreateOptions::extra.
block::CreateOptions foreign_create_options(const std::string& fmt, const OptionList& opts);
// qcow2: if k is encryption/encrypt.*, validates it, appends it to c.extra and returns true.
bool take_qcow2_encrypt_option(block::CreateOptions& c, const std::string& k, const std::string& v);
// The " encrypt.format=luks encrypt.key-secret=sec0 ..." part of qcow2's Formatting line (qemu prints it
// right after "fmt=qcow2").
std::string qcow2_encrypt_formatting(const OptionList& given);
std::string foreign_formatting_line(const std::string& filename, const block::CreateOptions& c,
                                    const OptionList& given);
std::string foreign_option_help(const std::string& fmt);
// info: for images implementing block::ImageDetails, rewrites qemu-img info's JSON object `j` (built by the
// generic code) with cluster-size, format-specific, encrypted and backing members in qemu's order.
void add_image_details(nlohmann::ordered_json& j, block::BlockImage& img);
// qemu's human rendering of a QAPI object (info's "Format specific information"): "name: value" lines,
// nested objects/lists indented by 4 with "[i]:" headers, '-' in names shown as ' '.
// convert: the granularity writes to this target must have (vmdk grain size), 0 if none.
uint64_t foreign_write_granularity(block::BlockImage& target);
// convert: whether a fresh target reads as zeroes (false for luks).
bool target_has_zero_init(block::BlockImage& target);
std::string qapi_human(const nlohmann::ordered_json& v, int indent);

}  // namespace vireo::img
