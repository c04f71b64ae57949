#include "network/netlink.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/if_bridge.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>

#include "common/error.h"
#include "common/fd.h"

namespace vireo::network {

namespace {

struct Socket {
  mnl_socket* nl = nullptr;
  unsigned portid = 0;
  Socket() {
    nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (!nl) throw_errno("netlink socket");
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
      const int e = errno;
      mnl_socket_close(nl);
      throw_errno("netlink bind", e);
    }
    portid = mnl_socket_get_portid(nl);
  }
  ~Socket() { mnl_socket_close(nl); }
};

// Sends one request and waits for its ACK (or runs `cb` over a dump). Returns 0 or -errno.
int transact(nlmsghdr* nlh, mnl_cb_t cb = nullptr, void* data = nullptr) {
  Socket s;
  static unsigned seq_counter = static_cast<unsigned>(::time(nullptr));
  nlh->nlmsg_seq = ++seq_counter;
  // NLM_F_DUMP shares bits with NLM_F_EXCL/NLM_F_CREATE: tell dumps apart by their GET type.
  const bool dump = nlh->nlmsg_type == RTM_GETLINK || nlh->nlmsg_type == RTM_GETADDR;
  if (!dump) nlh->nlmsg_flags |= NLM_F_ACK;
  if (mnl_socket_sendto(s.nl, nlh, nlh->nlmsg_len) < 0) return -errno;
  std::unique_ptr<char[]> buf(new char[65536]);
  for (;;) {
    ssize_t n = mnl_socket_recvfrom(s.nl, buf.get(), 65536);
    if (n < 0) return -errno;
    int r = mnl_cb_run(buf.get(), static_cast<size_t>(n), nlh->nlmsg_seq, s.portid, cb, data);
    if (r == MNL_CB_STOP) return 0;
    if (r < 0) return -errno;
  }
}

void check(int rc, const std::string& what) {
  if (rc < 0) throw_errno(what, -rc);
}

struct Msg {
  char buf[16384];
  nlmsghdr* nlh;
  Msg(uint16_t type, uint16_t flags) {
    std::memset(buf, 0, sizeof buf);
    nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | flags;
  }
  ifinfomsg* ifi(int family = AF_UNSPEC) {
    auto* m = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    m->ifi_family = static_cast<unsigned char>(family);
    return m;
  }
};

int index_of(const std::string& name, const std::string& what) {
  const unsigned i = ::if_nametoindex(name.c_str());
  if (i == 0) fail("{}: interface '{}' not found", what, name);
  return static_cast<int>(i);
}

bool parse_mac(const std::string& text, unsigned char out[6]) {
  unsigned v[6];
  char tail;
  if (std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
    return false;
  for (int i = 0; i < 6; ++i) out[i] = static_cast<unsigned char>(v[i]);
  return true;
}

void check_name(const std::string& name, const std::string& what) {
  if (name.empty() || name.size() >= IFNAMSIZ) fail("{}: invalid interface name '{}'", what, name);
}

// Attribute iteration without libmnl's C macros (their void* arithmetic does not compile as C++).
template <typename F>
void for_each_attr(const nlmsghdr* nlh, size_t offset, F&& f) {
  auto* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, offset));
  const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  while (mnl_attr_ok(a, static_cast<int>(tail - reinterpret_cast<const char*>(a)))) {
    f(a);
    a = mnl_attr_next(a);
  }
}
template <typename F>
void for_each_nested(const nlattr* nest, F&& f) {
  auto* a = static_cast<const nlattr*>(mnl_attr_get_payload(nest));
  const char* tail = reinterpret_cast<const char*>(nest) + mnl_attr_get_len(nest);
  while (mnl_attr_ok(a, static_cast<int>(tail - reinterpret_cast<const char*>(a)))) {
    f(a);
    a = mnl_attr_next(a);
  }
}

// Link attributes -> LinkInfo.
int link_cb(const nlmsghdr* nlh, void* data) {
  auto* out = static_cast<std::vector<LinkInfo>*>(data);
  auto* ifm = static_cast<ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
  LinkInfo li;
  li.index = ifm->ifi_index;
  li.up = ifm->ifi_flags & IFF_UP;
  li.running = ifm->ifi_flags & IFF_RUNNING;
  for_each_attr(nlh, sizeof(*ifm), [&](const nlattr* a) {
    switch (mnl_attr_get_type(a)) {
      case IFLA_IFNAME: li.name = mnl_attr_get_str(a); break;
      case IFLA_MTU: li.mtu = mnl_attr_get_u32(a); break;
      case IFLA_MASTER: li.master = static_cast<int>(mnl_attr_get_u32(a)); break;
      case IFLA_LINK: li.link = static_cast<int>(mnl_attr_get_u32(a)); break;
      case IFLA_ADDRESS:
        if (mnl_attr_get_payload_len(a) == 6) {
          auto* m = static_cast<const unsigned char*>(mnl_attr_get_payload(a));
          char b[18];
          std::snprintf(b, sizeof b, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
          li.mac = b;
        }
        break;
      case IFLA_LINKINFO:
        for_each_nested(a, [&](const nlattr* i) {
          if (mnl_attr_get_type(i) == IFLA_INFO_KIND) li.kind = mnl_attr_get_str(i);
          if (mnl_attr_get_type(i) == IFLA_INFO_DATA && li.kind == "vlan")
            for_each_nested(i, [&](const nlattr* v) {
              if (mnl_attr_get_type(v) == IFLA_VLAN_ID) li.vlan_id = mnl_attr_get_u16(v);
            });
        });
        break;
      default: break;
    }
  });
  out->push_back(li);
  return MNL_CB_OK;
}

int addr_cb(const nlmsghdr* nlh, void* data) {
  auto* out = static_cast<std::vector<AddrInfo>*>(data);
  auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_get_payload(nlh));
  AddrInfo ai;
  ai.index = static_cast<int>(ifa->ifa_index);
  ai.v6 = ifa->ifa_family == AF_INET6;
  ai.prefix = ifa->ifa_prefixlen;
  for_each_attr(nlh, sizeof(*ifa), [&](const nlattr* a) {
    if (mnl_attr_get_type(a) == IFA_ADDRESS || (mnl_attr_get_type(a) == IFA_LOCAL && !ai.v6)) {
      char b[INET6_ADDRSTRLEN] = {};
      ::inet_ntop(ifa->ifa_family, mnl_attr_get_payload(a), b, sizeof b);
      ai.address = b;
    }
  });
  out->push_back(ai);
  return MNL_CB_OK;
}

void new_link(const std::string& name, const char* kind, const std::string& what,
              const std::function<void(nlmsghdr*)>& info_data, const std::function<void(nlmsghdr*)>& more = {}) {
  check_name(name, what);
  Msg m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  m.ifi();
  mnl_attr_put_strz(m.nlh, IFLA_IFNAME, name.c_str());
  if (more) more(m.nlh);
  nlattr* li = mnl_attr_nest_start(m.nlh, IFLA_LINKINFO);
  mnl_attr_put_strz(m.nlh, IFLA_INFO_KIND, kind);
  if (info_data) {
    nlattr* d = mnl_attr_nest_start(m.nlh, IFLA_INFO_DATA);
    info_data(m.nlh);
    mnl_attr_nest_end(m.nlh, d);
  }
  mnl_attr_nest_end(m.nlh, li);
  const int rc = transact(m.nlh);
  if (rc == -EEXIST) fail("{}: interface '{}' already exists", what, name);
  if (rc == -EOPNOTSUPP) fail("{}: the kernel has no '{}' link support", what, kind);
  check(rc, what);
}

}  // namespace

std::vector<LinkInfo> list_links() {
  Msg m(RTM_GETLINK, NLM_F_DUMP);
  m.ifi();
  std::vector<LinkInfo> out;
  check(transact(m.nlh, link_cb, &out), "list links");
  return out;
}

std::optional<LinkInfo> find_link(const std::string& name) {
  for (auto& l : list_links())
    if (l.name == name) return l;
  return std::nullopt;
}

std::vector<AddrInfo> list_addresses() {
  Msg m(RTM_GETADDR, NLM_F_DUMP);
  auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(m.nlh, sizeof(ifaddrmsg)));
  ifa->ifa_family = AF_UNSPEC;
  std::vector<AddrInfo> out;
  check(transact(m.nlh, addr_cb, &out), "list addresses");
  return out;
}

void create_bridge(const std::string& name, const BridgeOptions& o) {
  const std::string what = "create bridge " + name;
  unsigned char mac[6];
  const bool has_mac = !o.mac.empty() && parse_mac(o.mac, mac);
  new_link(name, "bridge", what,
           [&](nlmsghdr* n) {
             mnl_attr_put_u32(n, IFLA_BR_STP_STATE, o.stp ? 1 : 0);
             // Kernel units are centiseconds; the kernel refuses delays below 2 s with STP on.
             mnl_attr_put_u32(n, IFLA_BR_FORWARD_DELAY, o.delay_s * 100);
             if (o.vlan_filtering) mnl_attr_put_u8(n, IFLA_BR_VLAN_FILTERING, 1);
           },
           [&](nlmsghdr* n) {
             if (has_mac) mnl_attr_put(n, IFLA_ADDRESS, 6, mac);
             if (o.mtu) mnl_attr_put_u32(n, IFLA_MTU, o.mtu);
           });
}

void create_bond(const std::string& name, const std::string& mode, unsigned miimon) {
  static const char* kModes[] = {"balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb"};
  int m = -1;
  for (int i = 0; i < 7; ++i)
    if (mode == kModes[i]) m = i;
  if (m < 0) fail("create bond {}: unknown mode '{}'", name, mode);
  new_link(name, "bond", "create bond " + name, [&](nlmsghdr* n) {
    mnl_attr_put_u8(n, IFLA_BOND_MODE, static_cast<uint8_t>(m));
    if (miimon) mnl_attr_put_u32(n, IFLA_BOND_MIIMON, miimon);
  });
}

void create_vlan(const std::string& name, const std::string& parent, unsigned id) {
  const std::string what = "create vlan " + name;
  const int p = index_of(parent, what);
  new_link(name, "vlan", what, [&](nlmsghdr* n) { mnl_attr_put_u16(n, IFLA_VLAN_ID, static_cast<uint16_t>(id)); },
           [&](nlmsghdr* n) { mnl_attr_put_u32(n, IFLA_LINK, static_cast<uint32_t>(p)); });
}

void create_vxlan(const std::string& name, const VxlanOptions& o) {
  const std::string what = "create vxlan " + name;
  in_addr remote{}, local{}, group{};
  if (!o.remote.empty() && ::inet_pton(AF_INET, o.remote.c_str(), &remote) != 1) fail("{}: invalid remote '{}'", what, o.remote);
  if (!o.local.empty() && ::inet_pton(AF_INET, o.local.c_str(), &local) != 1) fail("{}: invalid local '{}'", what, o.local);
  if (!o.group.empty() && ::inet_pton(AF_INET, o.group.c_str(), &group) != 1) fail("{}: invalid group '{}'", what, o.group);
  const int dev = o.dev.empty() ? 0 : index_of(o.dev, what);
  new_link(name, "vxlan", what, [&](nlmsghdr* n) {
    mnl_attr_put_u32(n, IFLA_VXLAN_ID, o.vni);
    if (!o.remote.empty()) mnl_attr_put(n, IFLA_VXLAN_GROUP, 4, &remote);
    if (!o.group.empty()) mnl_attr_put(n, IFLA_VXLAN_GROUP, 4, &group);
    if (!o.local.empty()) mnl_attr_put(n, IFLA_VXLAN_LOCAL, 4, &local);
    if (dev) mnl_attr_put_u32(n, IFLA_VXLAN_LINK, static_cast<uint32_t>(dev));
    mnl_attr_put_u16(n, IFLA_VXLAN_PORT, htons(static_cast<uint16_t>(o.port)));
  });
}

void delete_link(const std::string& name) {
  const unsigned i = ::if_nametoindex(name.c_str());
  if (i == 0) return;
  Msg m(RTM_DELLINK, 0);
  m.ifi()->ifi_index = static_cast<int>(i);
  const int rc = transact(m.nlh);
  if (rc == -ENODEV) return;
  check(rc, "delete interface " + name);
}

void set_up(const std::string& name, bool up) {
  const std::string what = std::string(up ? "bring up " : "bring down ") + name;
  Msg m(RTM_NEWLINK, 0);
  ifinfomsg* ifi = m.ifi();
  ifi->ifi_index = index_of(name, what);
  ifi->ifi_change = IFF_UP;
  ifi->ifi_flags = up ? IFF_UP : 0;
  check(transact(m.nlh), what);
}

void set_mtu(const std::string& name, unsigned mtu) {
  const std::string what = "set mtu of " + name;
  Msg m(RTM_NEWLINK, 0);
  m.ifi()->ifi_index = index_of(name, what);
  mnl_attr_put_u32(m.nlh, IFLA_MTU, mtu);
  check(transact(m.nlh), what);
}

void set_master(const std::string& name, const std::string& master) {
  const std::string what = master.empty() ? "release " + name : "add " + name + " to " + master;
  Msg m(RTM_NEWLINK, 0);
  m.ifi()->ifi_index = index_of(name, what);
  mnl_attr_put_u32(m.nlh, IFLA_MASTER, master.empty() ? 0 : static_cast<uint32_t>(index_of(master, what)));
  check(transact(m.nlh), what);
}

void add_address(const std::string& name, const std::string& address, unsigned prefix, bool v6) {
  const std::string what = "add address " + address + "/" + std::to_string(prefix) + " to " + name;
  unsigned char bin[16];
  if (::inet_pton(v6 ? AF_INET6 : AF_INET, address.c_str(), bin) != 1) fail("{}: invalid address", what);
  Msg m(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
  auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(m.nlh, sizeof(ifaddrmsg)));
  ifa->ifa_family = v6 ? AF_INET6 : AF_INET;
  ifa->ifa_prefixlen = static_cast<unsigned char>(prefix);
  ifa->ifa_index = static_cast<unsigned>(index_of(name, what));
  if (v6) ifa->ifa_flags = IFA_F_NODAD;  // usable at once (dnsmasq binds to it right away)
  mnl_attr_put(m.nlh, IFA_LOCAL, v6 ? 16 : 4, bin);
  mnl_attr_put(m.nlh, IFA_ADDRESS, v6 ? 16 : 4, bin);
  if (!v6) {
    uint32_t a;
    std::memcpy(&a, bin, 4);
    const uint32_t mask = prefix ? htonl(~0u << (32 - prefix)) : 0;
    const uint32_t bcast = (a & mask) | ~mask;
    if (prefix < 31) mnl_attr_put(m.nlh, IFA_BROADCAST, 4, &bcast);
  }
  check(transact(m.nlh), what);
}

void del_address(const std::string& name, const std::string& address, unsigned prefix, bool v6) {
  const std::string what = "remove address " + address + "/" + std::to_string(prefix) + " from " + name;
  unsigned char bin[16];
  if (::inet_pton(v6 ? AF_INET6 : AF_INET, address.c_str(), bin) != 1) fail("{}: invalid address", what);
  Msg m(RTM_DELADDR, 0);
  auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(m.nlh, sizeof(ifaddrmsg)));
  ifa->ifa_family = v6 ? AF_INET6 : AF_INET;
  ifa->ifa_prefixlen = static_cast<unsigned char>(prefix);
  ifa->ifa_index = static_cast<unsigned>(index_of(name, what));
  mnl_attr_put(m.nlh, IFA_LOCAL, v6 ? 16 : 4, bin);
  check(transact(m.nlh), what);
}

void add_route(const std::string& dst, unsigned prefix, const std::string& gateway, bool v6, unsigned metric) {
  const std::string what = "add route " + dst + "/" + std::to_string(prefix) + " via " + gateway;
  unsigned char d[16], g[16];
  if (::inet_pton(v6 ? AF_INET6 : AF_INET, dst.c_str(), d) != 1 || ::inet_pton(v6 ? AF_INET6 : AF_INET, gateway.c_str(), g) != 1)
    fail("{}: invalid address", what);
  Msg m(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
  auto* rt = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(m.nlh, sizeof(rtmsg)));
  rt->rtm_family = v6 ? AF_INET6 : AF_INET;
  rt->rtm_dst_len = static_cast<unsigned char>(prefix);
  rt->rtm_table = RT_TABLE_MAIN;
  rt->rtm_protocol = RTPROT_STATIC;
  rt->rtm_scope = RT_SCOPE_UNIVERSE;
  rt->rtm_type = RTN_UNICAST;
  mnl_attr_put(m.nlh, RTA_DST, v6 ? 16 : 4, d);
  mnl_attr_put(m.nlh, RTA_GATEWAY, v6 ? 16 : 4, g);
  if (metric) mnl_attr_put_u32(m.nlh, RTA_PRIORITY, metric);
  check(transact(m.nlh), what);
}

static void bridge_vlan(uint16_t type, const std::string& port, unsigned vid, bool pvid, bool untagged) {
  const std::string what = std::string(type == RTM_SETLINK ? "add vlan " : "remove vlan ") + std::to_string(vid) + " on " + port;
  Msg m(type, 0);
  m.ifi(AF_BRIDGE)->ifi_index = index_of(port, what);
  nlattr* spec = mnl_attr_nest_start(m.nlh, IFLA_AF_SPEC);
  bridge_vlan_info info{};
  info.vid = static_cast<uint16_t>(vid);
  if (pvid) info.flags |= BRIDGE_VLAN_INFO_PVID;
  if (untagged) info.flags |= BRIDGE_VLAN_INFO_UNTAGGED;
  mnl_attr_put(m.nlh, IFLA_BRIDGE_VLAN_INFO, sizeof info, &info);
  mnl_attr_nest_end(m.nlh, spec);
  check(transact(m.nlh), what);
}

void bridge_vlan_add(const std::string& port, unsigned vid, bool pvid, bool untagged) {
  bridge_vlan(RTM_SETLINK, port, vid, pvid, untagged);
}
void bridge_vlan_del(const std::string& port, unsigned vid) { bridge_vlan(RTM_DELLINK, port, vid, false, false); }

void set_sysctl(const std::string& path, const std::string& value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) throw_errno("write " + path);
}

}  // namespace vireo::network
