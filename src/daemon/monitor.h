// The per-domain monitor process (see monitor.cpp).
#pragma once

namespace vireo::daemon {
int monitor_main(int argc, char** argv);
}
