// The search kernels' thread pool: parallel loops that hold up beside other busy processes.
//
// OpenMP's team (torch's runtime, which the kernels share) spins at its barriers and splits a
// loop among a fixed team: when another process keeps the cores busy, every barrier waits for
// whichever team thread the scheduler has descheduled, up to a whole time slice (4 ms at
// HZ=250), and a 2-thread query took 32 ms instead of 1.3 (benchmarks/RESULTS.md, "Search
// under load"). Here the calling thread works through the tasks itself and pool workers join
// when the scheduler runs them: tasks are claimed one at a time, so a descheduled worker
// delays at most the one task it holds, and a worker that never runs costs nothing. Workers
// and a caller waiting for the last task spin briefly, then sleep (a sleeping thread gives
// its core back to the busy process and is run again promptly when woken). A worker that
// sleeps keeps off the CPU of the caller it last served until it is awake again (Linux:
// its affinity mask, restored on waking), so a wake-up does not queue it behind the caller.
//
// One loop runs on the pool at a time; while several threads call loops at once (two Python
// threads searching), or from inside a task, a loop runs on its calling thread alone. After fork() the
// child starts a new pool (the parent's workers do not exist there); a task must not fork.
#pragma once

#include <cstdint>

namespace ce {

using ParallelTask = void (*)(void* context, int64_t task, int slot);

// Runs task(context, i, slot) for every i in [0, n_tasks) on the caller and up to threads-1
// workers; `slot` in [0, threads) is distinct among the threads running at once (per-thread
// scratch). Returns when every task has run. Tasks must not throw.
void parallel_run(int64_t n_tasks, int threads, ParallelTask task, void* context) noexcept;

// How long idle pool threads spin before they sleep, process-wide. Spinning keeps a quiet
// machine's workers awake between the kernels of one query (2-thread search p50 ~10% lower
// than with 50 us); beside busy processes a shorter spin leaves the cores to them (the
// search sets it while the machine is busy, search/threads.py).
constexpr int kDefaultParallelSpinUs = 300;
void set_parallel_spin_us(int microseconds);
int parallel_spin_us();

// Wakes the workers a loop of `threads` would use, without waiting: a caller about to run
// several loops (a search) calls it first, so workers that slept since its last call are
// spinning when its first loop starts (waking them there cost ~0.1 ms of a 2 ms query).
void parallel_wake(int threads) noexcept;

// parallel_run over a callable body(int64_t task, int slot).
template <class Body>
void parallel_for(int64_t n_tasks, int threads, Body& body) {
  if (threads <= 1 || n_tasks <= 1) {
    for (int64_t i = 0; i < n_tasks; ++i) body(i, 0);
    return;
  }
  parallel_run(n_tasks, threads,
               [](void* context, int64_t task, int slot) { (*static_cast<Body*>(context))(task, slot); }, &body);
}

}  // namespace ce
