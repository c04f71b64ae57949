// `vireo ssh-helper [--readonly] [--socket PATH]`: run by ssh on the remote host for vireo+ssh:// URIs
// (as libvirt's virt-ssh-helper): bridges stdin/stdout to that host's vireod socket.
#pragma once

namespace vireo::cli {
int ssh_helper_main(int argc, char** argv);  // argv[1] == "ssh-helper"
}
