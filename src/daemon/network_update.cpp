// net-update: one section of a network's XML changed in place (add-first/add-last/delete/modify), on the
// live network, the persistent config or both. Done on the XML document and re-validated by the parser,
// so every section gets the same checks as a definition. Live: DHCP hosts and DNS records are applied by
// SIGHUP to dnsmasq (it re-reads its hosts files); DHCP ranges restart dnsmasq.
#include <pugixml.hpp>

#include <sstream>

#include "common/error.h"
#include "daemon/network_driver.h"
#include "network/dnsmasq.h"

namespace vireo::daemon {

using nlohmann::json;
using network::NetworkDef;
using pugi::xml_node;

namespace {

struct Section {
  const char* name;
  const char* path;     // parent element, from <network> ("" = the root); "ip" is indexed by parent-index
  const char* element;  // the element the snippet is
  std::vector<const char*> keys;  // attributes that identify an existing element (first one present wins)
};

const Section kSections[] = {
    {"ip-dhcp-host", "ip/dhcp", "host", {"mac", "id", "name", "ip"}},
    {"ip-dhcp-range", "ip/dhcp", "range", {"start"}},
    {"dns-host", "dns", "host", {"ip"}},
    {"dns-txt", "dns", "txt", {"name"}},
    {"dns-srv", "dns", "srv", {"service"}},
    {"portgroup", "", "portgroup", {"name"}},
    {"forward-interface", "forward", "interface", {"dev"}},
    {"ip", "", "ip", {"address"}},
    {"bridge", "", "bridge", {}},
    {"domain", "", "domain", {}},
};

xml_node parent_for(xml_node root, const Section& s, int index, bool create) {
  std::string path = s.path;
  xml_node cur = root;
  if (path.rfind("ip", 0) == 0) {
    int i = 0;
    xml_node ip;
    for (xml_node n : root.children("ip")) {
      if (i++ == index) {
        ip = n;
        break;
      }
    }
    if (!ip) failed("couldn't locate a matching <ip> element (parent-index " + std::to_string(index) + ")");
    cur = ip;
    path = path.size() > 2 ? path.substr(3) : "";
  }
  if (path.empty()) return cur;
  xml_node n = cur.child(path.c_str());
  if (!n && create) n = cur.append_child(path.c_str());
  return n;
}

bool same(xml_node a, xml_node b, const Section& s) {
  if (std::string(a.name()) != b.name()) return false;
  for (const char* k : s.keys)
    if (b.attribute(k)) return std::string(a.attribute(k).value()) == b.attribute(k).value();
  return s.keys.empty();
}

NetworkDef apply(const NetworkDef& def, const std::string& command, const Section& s, const std::string& snippet, int index) {
  pugi::xml_document doc;
  const std::string text = network::write_network_xml(def);
  doc.load_string(text.c_str());
  xml_node root = doc.document_element();
  pugi::xml_document sd;
  if (!sd.load_string(snippet.c_str()) || !sd.document_element()) xml_error("invalid XML in the update: " + snippet);
  xml_node item = sd.document_element();
  if (std::string(item.name()) != s.element)
    xml_error(std::string("the update for section '") + s.name + "' must be a <" + s.element + "> element, not <" + item.name() + ">");
  const bool adding = command == "add" || command == "add-last" || command == "add-first";
  xml_node parent = parent_for(root, s, index, adding);
  xml_node match;
  if (parent)
    for (xml_node c : parent.children(s.element))
      if (same(c, item, s)) {
        match = c;
        break;
      }
  if (adding) {
    if (match && !s.keys.empty()) failed(std::string("there is an existing ") + s.element + " entry that matches");
    if (s.keys.empty()) {
      if (match) parent.remove_child(match);
    }
    if (command == "add-first" && parent.child(s.element)) parent.insert_copy_before(item, parent.child(s.element));
    else parent.append_copy(item);
  } else if (command == "delete") {
    if (!match) failed(std::string("couldn't locate a matching ") + s.element + " entry in network '" + def.name + "'");
    parent.remove_child(match);
  } else if (command == "modify") {
    if (!match) failed(std::string("couldn't locate a matching ") + s.element + " entry in network '" + def.name + "'");
    parent.insert_copy_after(item, match);
    parent.remove_child(match);
  } else {
    bad_arg("unknown net-update command '" + command + "' (add, add-first, add-last, delete, modify)");
  }
  std::ostringstream os;
  doc.save(os);
  try {
    return network::parse_network_xml(os.str(), false);
  } catch (const Error& e) {
    xml_error(e.what());
  }
}

}  // namespace

json NetworkDriver::update(Net& n, const json& p) {
  const std::string command = param_str(p, "command"), section = param_str(p, "section"), snippet = param_str(p, "xml");
  const int index = static_cast<int>(param_u64(p, "parent_index", 0));
  bool live = param_bool(p, "live"), config = param_bool(p, "config");
  if (!live && !config) {  // --current
    live = n.active;
    config = !n.active;
  }
  if (live && !n.active) invalid("network '" + n.name + "' is not active, cannot update its live state");
  if (config && !n.persistent()) invalid("cannot update the persistent config of transient network '" + n.name + "'");
  const Section* s = nullptr;
  for (const auto& c : kSections)
    if (section == c.name) s = &c;
  if (!s) {
    std::string list;
    for (const auto& c : kSections) list += (list.empty() ? "" : ", ") + std::string(c.name);
    throw RpcError(kUnsupported, "unsupported configuration: can't update '" + section + "' section of network '" + n.name +
                                     "' (supported: " + list + ")");
  }
  std::optional<NetworkDef> new_live, new_config;
  if (live) {
    new_live = apply(*n.live, command, *s, snippet, index);
    if (section == "ip" || section == "bridge" || section == "forward-interface")
      throw RpcError(kUnsupported, "unsupported configuration: section '" + section + "' of an active network can only be changed in its persistent config");
  }
  if (config) new_config = apply(*n.config, command, *s, snippet, index);
  if (new_config) {
    atomic_write(config_dir() + "/" + n.name + ".xml", network::write_network_xml(*new_config));
    n.config = new_config;
  }
  if (new_live) {
    const auto f = network::DnsmasqFiles::in(dnsmasq_dir(), n.name);
    try {
      if (section == "ip-dhcp-range" || section == "dns-txt" || section == "dns-srv" || section == "domain")
        network::dnsmasq_start(h_.opts.dnsmasq, *new_live, f);
      else if (network::needs_dnsmasq(*new_live))
        network::dnsmasq_reload(*new_live, f);
    } catch (const Error& e) {
      failed(e.what());
    }
    n.live = new_live;
    save_live(n);
  }
  return json{{"live", live}, {"config", config}};
}

}  // namespace vireo::daemon
