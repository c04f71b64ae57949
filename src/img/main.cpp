// vireo-img: entry point (see img.h; main_run.cpp dispatches the subcommands).
#include "img/img.h"

int main(int argc, char** argv) { return vireo::img::run(argc, argv); }
