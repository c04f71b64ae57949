#include "xml/xml_util.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <sstream>

#include "common/error.h"
#include "domain/domain.h"

namespace vireo::xml {

using pugi::xml_node;

pugi::xml_node parse_root(pugi::xml_document& doc, const std::string& text, const char* want) {
  auto r = doc.load_buffer(text.data(), text.size(), pugi::parse_default | pugi::parse_ws_pcdata_single);
  if (!r) {
    size_t line = 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + std::min<ptrdiff_t>(r.offset, text.size()), '\n'));
    fail("invalid XML at line {}: {}", line, r.description());
  }
  xml_node root = doc.document_element();
  if (!root) fail("invalid XML: no root element");
  if (std::string(root.name()) != want) fail("unexpected root element <{}>, expecting <{}>", root.name(), want);
  return root;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string text_of(xml_node n) { return trim(n.text().get()); }
std::string attr(xml_node n, const char* name) { return n.attribute(name).value(); }
bool in(Names names, std::string_view s) { return std::find(names.begin(), names.end(), s) != names.end(); }

std::string serialize(xml_node n) {
  std::ostringstream os;
  n.print(os, "", pugi::format_raw | pugi::format_attribute_single_quote);
  return os.str();
}

xml_node single(xml_node n, const char* name, const std::string& path) {
  xml_node first = n.child(name);
  if (first && first.next_sibling(name)) fail("{}: duplicate <{}>", path, name);
  return first;
}

Extras extras(xml_node n, Names attrs, Names children) {
  Extras e;
  for (auto a : n.attributes())
    if (!in(attrs, a.name())) e.attrs.emplace_back(a.name(), a.value());
  for (auto c : n.children())
    if (c.type() == pugi::node_element && !in(children, c.name())) e.children.push_back(serialize(c));
  return e;
}

void add_extras(xml_node n, const Extras& e) {
  for (const auto& [k, v] : e.attrs) n.append_attribute(k.c_str()) = v.c_str();
  add_children(n, e);
}

void add_children(xml_node n, const Extras& e) {
  for (const auto& c : e.children) n.append_buffer(c.data(), c.size());
}

xml_node text_child(xml_node parent, const char* name, const std::string& text) {
  xml_node n = parent.append_child(name);
  n.text() = text.c_str();
  return n;
}

void set_attr(xml_node n, const char* name, const std::string& v) {
  if (!v.empty()) n.append_attribute(name) = v.c_str();
}

std::string write(const pugi::xml_document& doc) {
  std::ostringstream os;
  doc.save(os, "  ", pugi::format_indent | pugi::format_no_declaration | pugi::format_attribute_single_quote);
  // libvirt writes empty elements as <x a='1'/>; pugixml puts a space before "/>" (attribute values cannot
  // contain a raw newline, so this only touches tag ends).
  std::string out = os.str(), res;
  res.reserve(out.size());
  const std::string oc = std::string("<") + kOpenClose + " />\n";
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == '\n' || i == 0) {
      // Drop a whole line holding only the open/close marker.
      size_t j = out[i] == '\n' ? i + 1 : i;
      while (j < out.size() && out[j] == ' ') ++j;
      if (out.compare(j, oc.size(), oc) == 0) {
        if (out[i] == '\n') res += '\n';
        i = j + oc.size() - 1;
        continue;
      }
    }
    if (out.compare(i, 4, " />\n") == 0) {
      res += "/>\n";
      i += 3;
    } else {
      res += out[i];
    }
  }
  return res;
}

unsigned long long parse_ull(const std::string& s, const std::string& what) {
  if (s.empty()) fail("{}: missing value", what);
  unsigned long long v = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) fail("{}: invalid value '{}'", what, s);
    if (v > (~0ull - 9) / 10) fail("{}: value '{}' is too large", what, s);
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  return v;
}

unsigned parse_uint(const std::string& s, const std::string& what, unsigned min, unsigned max) {
  const unsigned long long v = parse_ull(s, what);
  if (v < min || v > max) fail("{}: value '{}' is out of range ({}..{})", what, s, min, max);
  return static_cast<unsigned>(v);
}

void check_enum(const std::string& value, Names allowed, const std::string& what) {
  if (!in(allowed, value)) {
    std::string list;
    for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    fail("{}: unsupported value '{}' (expected one of: {})", what, value, list);
  }
}

unsigned long long scaled_bytes(const std::string& value, const std::string& unit, const std::string& what,
                                unsigned long long dflt_unit) {
  const unsigned long long v = parse_ull(trim(value), what);
  unsigned long long mul = dflt_unit;
  if (!unit.empty()) {
    const std::string u = unit;
    static const char* kP = "KMGTPE";
    if (u == "b" || u == "bytes") mul = 1;
    else {
      const char c = static_cast<char>(std::toupper(static_cast<unsigned char>(u[0])));
      const char* p = std::strchr(kP, c);
      if (!p || u.size() > 3) fail("{}: unknown unit '{}'", what, unit);
      const int exp = static_cast<int>(p - kP) + 1;
      unsigned long long base;
      if (u.size() == 1 || (u.size() == 3 && u[1] == 'i' && u[2] == 'B')) base = 1024;
      else if (u.size() == 2 && u[1] == 'B') base = 1000;
      else fail("{}: unknown unit '{}'", what, unit);
      mul = 1;
      for (int i = 0; i < exp; ++i) mul *= base;
    }
  }
  if (mul && v > ~0ull / mul) fail("{}: value '{}' is too large", what, value);
  return v * mul;
}

std::string generate_uuid() { return domain::generate_uuid(); }
std::string normalize_uuid(const std::string& text) { return domain::normalize_uuid(text); }

bool valid_mac(const std::string& mac) {
  if (mac.size() != 17) return false;
  for (size_t i = 0; i < 17; ++i) {
    if (i % 3 == 2) {
      if (mac[i] != ':') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(mac[i]))) {
      return false;
    }
  }
  return true;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string random_mac() {
  const std::string u = generate_uuid();
  return "52:54:00:" + u.substr(24, 2) + ":" + u.substr(26, 2) + ":" + u.substr(28, 2);
}

}  // namespace vireo::xml
