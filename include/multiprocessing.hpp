// multiprocessing.hpp: the umbrella header (Python: multiprocessing/__init__.py).
// Include this and write `namespace mp = multiprocessing;`, as Python users write
// `import multiprocessing as mp`. Each part also has its own header under multiprocessing/.
#pragma once

#include "multiprocessing/errors.hpp"
#include "multiprocessing/context.hpp"
#include "multiprocessing/process.hpp"
#include "multiprocessing/reduction.hpp"
#include "multiprocessing/connection.hpp"
#include "multiprocessing/synchronize.hpp"
#include "multiprocessing/sharedctypes.hpp"
#include "multiprocessing/shared_memory.hpp"
#include "multiprocessing/queues.hpp"
#include "multiprocessing/managers.hpp"
#include "multiprocessing/pool.hpp"
#include "multiprocessing/detail/context_impl.hpp"
