// vireo-img: qemu-img info's JSON and human renderings (shared by info and snapshot -l).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "block/qcow2.h"

namespace vireo::img {

// The "ID  TAG  VM SIZE ..." table (header line + one line per snapshot), as `snapshot -l` prints it.
std::string snapshot_table(const std::vector<block::Qcow2Snapshot>& snaps);
// One image's `info --output=json` object (qemu's field names).
// `name` replaces the image's file name (qemu's json:{...} name of an --image-opts image).
nlohmann::ordered_json image_info_json(block::BlockImage& img, const std::string& name = "");
// One image's human `info` block.
std::string image_info_human(block::BlockImage& img, const std::string& name = "");

}  // namespace vireo::img
