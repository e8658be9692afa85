// managers.hpp: (stub, filled in by its issue).
#pragma once
#include "multiprocessing/errors.hpp"
