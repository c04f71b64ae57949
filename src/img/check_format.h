// vireo-img: qemu-img check's renderings and exit status (unit-tested without an image).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "block/qcow2.h"

namespace vireo::img {

std::string check_human(const block::CheckResult& r);
nlohmann::ordered_json check_json(const block::CheckResult& r, const std::string& filename,
                                  const std::string& format);
// 1 if check errors, else 2 for corruptions, 3 for leaks, 0 when clean.
int check_exit_status(const block::CheckResult& r);

}  // namespace vireo::img
