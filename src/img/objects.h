// vireo-img: `--object` (qemu's user-creatable objects). Only `secret` has an effect: it adds an entry to
// block/secret.h's table, which encrypted images (key-secret=ID, encrypt.key-secret=ID) read at open/create.
#pragma once
#include <string>

namespace vireo::img {

// Parses "secret,id=ID,data=...|file=...[,format=raw|base64][,keyid=ID,iv=B64]" (or qom-type=secret,...),
// reads/decodes/decrypts the value and registers it. Throws Error with qemu's texts
// ("Parameter 'id' is missing", "Either 'file' or 'data' must be provided", ...).
void add_object(const std::string& spec);

// RFC 4648 base64 ("Base64 data contains invalid characters").
std::string base64_decode(const std::string& in);

}  // namespace vireo::img
