// A minimal fork-join loop for the fast CPU backend: no OpenMP, no pool to shut down.
#pragma once

#include <cstdint>
#include <functional>

namespace dilated::cpu_fast {

// Calls body(task, worker) for every task in [0, count) on up to `workers` threads, the caller
// being worker 0; returns when all are done. Tasks go out one at a time from a shared counter,
// so uneven tasks (causal masks, short segments) balance themselves. A task's result must not
// depend on which worker runs it; then the results do not depend on the number of workers.
void parallel_for(int workers, int64_t count, const std::function<void(int64_t, int)>& body);

// Threads a run uses: Params::num_threads, or every hardware thread when it is 0.
int thread_count(int32_t requested);

}  // namespace dilated::cpu_fast
