#include "cpu/cpu_model.h"
