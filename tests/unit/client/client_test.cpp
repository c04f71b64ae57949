// Client library pieces that need no daemon: URIs, default socket, line framing.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstdlib>

#include "client/client.h"
#include "client/vireo.h"
#include "client/wire.h"

using namespace vireo::client;

TEST(Uri, SocketPaths) {
  ::setenv("VIREO_ROOT", "/srv/v/", 1);
  EXPECT_EQ(default_socket_path(), "/srv/v/run/vireo/vireod.sock");
  EXPECT_EQ(socket_from_uri(""), "/srv/v/run/vireo/vireod.sock");
  ::unsetenv("VIREO_ROOT");
  EXPECT_EQ(default_socket_path(), "/run/vireo/vireod.sock");
  EXPECT_EQ(socket_from_uri("unix:///tmp/x.sock"), "/tmp/x.sock");
  EXPECT_EQ(socket_from_uri("unix:/tmp/x.sock"), "/tmp/x.sock");
  EXPECT_THROW(socket_from_uri("qemu:///system"), ClientError);
  EXPECT_THROW(socket_from_uri("unix://relative"), ClientError);
}

TEST(Wire, LinesSplitAndReassemble) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  LineChannel a{vireo::UniqueFd(sv[0])}, b{vireo::UniqueFd(sv[1])};
  ASSERT_TRUE(a.write_line("{\"x\":1}"));
  ASSERT_EQ(::send(sv[0], "par", 3, 0), 3);
  ASSERT_EQ(::send(sv[0], "tial\nrest", 9, 0), 9);
  EXPECT_EQ(b.read_line(1000), "{\"x\":1}");
  EXPECT_EQ(b.read_line(1000), "partial");
  EXPECT_FALSE(b.read_line(50).has_value());  // "rest" has no newline yet: timeout
  EXPECT_EQ(b.take_buffered(), "rest");
  // Over-long lines are refused, not buffered forever.
  std::string big(100, 'a');
  ASSERT_TRUE(a.write_line(big));
  EXPECT_FALSE(b.read_line(1000, 10).has_value());
}

TEST(CApi, ConnectFailureSetsLastError) {
  EXPECT_EQ(vireo_connect("unix:///nonexistent/vireod.sock"), nullptr);
  EXPECT_STREQ(vireo_last_error(), "Failed to connect socket to '/nonexistent/vireod.sock': No such file or directory");
  EXPECT_EQ(vireo_domain_start(nullptr), -1);
  EXPECT_STREQ(vireo_last_error(), "invalid argument: domain is NULL");
  EXPECT_EQ(vireo_domain_lookup_by_name(nullptr, "x"), nullptr);
}
