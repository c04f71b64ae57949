// vireo/xml: small pugixml helpers shared by the libvirt-format models of networks, storage pools and
// volumes, and host interfaces: reading with one-line errors, keeping unknown parts verbatim, and writing
// libvirt's layout (2-space indent, single quotes, "<x/>" for empty elements).
#pragma once
#include <pugixml.hpp>

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace vireo::xml {

using Names = std::initializer_list<std::string_view>;

// Parses `text`; throws Error("invalid XML at line N: <pugixml's reason>") or ("... root element is <x>,
// expected <want>").
pugi::xml_node parse_root(pugi::xml_document& doc, const std::string& text, const char* want);

std::string trim(std::string_view s);
std::string text_of(pugi::xml_node n);
std::string attr(pugi::xml_node n, const char* name);
bool in(Names names, std::string_view s);
std::string serialize(pugi::xml_node n);  // one element, compact
pugi::xml_node single(pugi::xml_node n, const char* name, const std::string& path);  // duplicate -> Error

// What a model does not know at one element, verbatim.
struct Extras {
  std::vector<std::pair<std::string, std::string>> attrs;
  std::vector<std::string> children;
  bool empty() const { return attrs.empty() && children.empty(); }
};
Extras extras(pugi::xml_node n, Names known_attrs, Names known_children);
void add_extras(pugi::xml_node n, const Extras& e);
void add_children(pugi::xml_node n, const Extras& e);

pugi::xml_node text_child(pugi::xml_node parent, const char* name, const std::string& text);
void set_attr(pugi::xml_node n, const char* name, const std::string& v);  // skipped when v is empty

// libvirt's layout of a document. An empty child named kOpenClose makes its parent print as
// "<x ...>\n  </x>" (libvirt does that for <ip> and <source>).
inline constexpr const char* kOpenClose = "vireo-open-close";
std::string write(const pugi::xml_document& doc);

// Numbers and enums with errors naming the element: "ip prefix: invalid value 'x'".
unsigned long long parse_ull(const std::string& s, const std::string& what);
unsigned parse_uint(const std::string& s, const std::string& what, unsigned min, unsigned max);
void check_enum(const std::string& value, Names allowed, const std::string& what);
// libvirt's scaled integers: value + unit (b, bytes, KB, K, KiB, MB, M, MiB, ..., EiB; empty = `dflt_unit`).
unsigned long long scaled_bytes(const std::string& value, const std::string& unit, const std::string& what,
                                unsigned long long dflt_unit = 1);

std::string generate_uuid();
std::string normalize_uuid(const std::string& text);  // "" when invalid
bool valid_mac(const std::string& mac);
std::string lower(std::string s);
std::string random_mac();  // 52:54:00:xx:xx:xx

}  // namespace vireo::xml
