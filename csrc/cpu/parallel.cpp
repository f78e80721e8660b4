// The search kernels' thread pool (contract and reasons: cpu/parallel.h).
//
// A loop is a "job" numbered by `job`. Claims are tagged with the job's number in the high 32
// bits of `claim` (next task in the low 32) and `slots` (slots handed out): a worker that
// read a job's fields late, after the caller finished it and started the next, fails its
// tagged claim and runs nothing. The caller closes a job (its claim word to "no task left")
// before it writes the next job's fields.
#include "cpu/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include <pthread.h>
#if defined(__linux__)
#include <sched.h>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define CE_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define CE_PAUSE() asm volatile("yield")
#else
#define CE_PAUSE() ((void)0)
#endif

namespace ce {
namespace {

// How long an idle worker, or a caller waiting for the last task, spins before sleeping
// (set_parallel_spin_us): by default longer than the gap between two kernels of one query
// (the Python between them), so a quiet machine's workers are awake for the next kernel.
std::atomic<int> g_spin_us{kDefaultParallelSpinUs};

inline std::chrono::microseconds spin_time() { return std::chrono::microseconds(g_spin_us.load(std::memory_order_relaxed)); }
constexpr uint64_t kNoTask = 0xffffffffu;  // low half of a closed job's claim word
constexpr int kMaxWorkers = 255;

inline uint64_t tag(uint32_t job, uint64_t low) { return (static_cast<uint64_t>(job) << 32) | low; }

// Workers keep off the CPU of the caller whose loop they sleep after: Linux placed a woken
// worker on its waker's CPU on the 2-core VM of benchmarks/RESULTS.md although the other core
// was idle, where it waited behind the caller for most of the query (with queries 6.7 ms
// apart, workers asleep in between, a 2-thread search took 3.3 ms p50 against 2.7 ms on one
// thread). So a worker about to sleep takes that CPU out of its affinity mask and puts the
// mask back once awake; one that finds itself on the caller's CPU anyway (the caller moved)
// moves. Linux only; elsewhere these do nothing.
class CpuAvoidance {
 public:
  // Called before sleeping: keep off `cpu` (where the last caller ran; -1 = unknown).
  void avoid(int cpu) {
#if defined(__linux__)
    narrowed_ = false;
    if (cpu < 0 || cpu >= CPU_SETSIZE) return;
    if (pthread_getaffinity_np(pthread_self(), sizeof allowed_, &allowed_) != 0 || !CPU_ISSET(cpu, &allowed_)) return;
    cpu_set_t others = allowed_;
    CPU_CLR(cpu, &others);
    if (CPU_COUNT(&others) == 0) return;
    narrowed_ = pthread_setaffinity_np(pthread_self(), sizeof others, &others) == 0;
#else
    (void)cpu;
#endif
  }

  // Called once awake: the mask back (the scheduler may move the thread later); off `cpu`
  // (the new job's caller) if the thread runs there.
  void restore(int cpu) {
#if defined(__linux__)
    if (narrowed_) {
      pthread_setaffinity_np(pthread_self(), sizeof allowed_, &allowed_);
      narrowed_ = false;
    }
    if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getcpu() != cpu) return;
    avoid(cpu);
    restore(-1);
#else
    (void)cpu;
#endif
  }

 private:
#if defined(__linux__)
  cpu_set_t allowed_;
  bool narrowed_ = false;
#endif
};

class Pool {
 public:
  void run(int64_t n_tasks, int threads, ParallelTask task, void* context) {
    if (inside_task_) {  // a loop inside a task (its thread may hold job_lock_ already)
      serial(n_tasks, task, context);
      return;
    }
    // While several threads call loops at once, each runs its own on its thread: they
    // already keep the cores busy, and a worker (or its idle spin) beside them would only
    // take turns with a caller.
    callers_.fetch_add(1);
    struct Leave {
      std::atomic<int>& callers;
      ~Leave() { callers.fetch_sub(1); }
    } leave{callers_};
    std::unique_lock<std::mutex> busy(job_lock_, std::try_to_lock);
    if (!busy.owns_lock() || callers_.load() > 1) {
      serial(n_tasks, task, context);
      return;
    }
    threads = static_cast<int>(std::min<int64_t>(threads, std::min<int64_t>(n_tasks, kMaxWorkers + 1)));
    if (!grow(threads - 1)) threads = static_cast<int>(workers_.size()) + 1;
    if (threads <= 1) {
      serial(n_tasks, task, context);
      return;
    }
    const uint32_t job = publish(task, context, n_tasks, threads - 1);
    work(job, n_tasks, task, context, 0);
    if (!wait_done(n_tasks)) {
      std::unique_lock<std::mutex> lock(wake_lock_);
      finished_cv_.wait(lock, [&] { return done_.load() >= n_tasks; });
    }
    claim_.store(tag(job, kNoTask));
  }

 private:
  static void serial(int64_t n_tasks, ParallelTask task, void* context) {
    for (int64_t i = 0; i < n_tasks; ++i) task(context, i, 0);
  }

 public:
  // Wakes sleeping workers with an empty job, so they spin when the caller's next loop
  // starts; nothing happens while another loop holds the pool.
  void wake(int threads) {
    if (inside_task_ || threads <= 1) return;
    std::unique_lock<std::mutex> busy(job_lock_, std::try_to_lock);
    if (!busy.owns_lock()) return;
    grow(std::min(threads, kMaxWorkers + 1) - 1);
    publish(nullptr, nullptr, 0, 0);
  }

 private:
  // Writes a job's fields, then makes it visible to the workers and wakes sleeping ones (the
  // caller holds job_lock_). An empty job is published closed: a worker late to it must not
  // claim "task 0" with the next job's fields.
  uint32_t publish(ParallelTask task, void* context, int64_t n_tasks, int helpers) {
    const uint32_t job = job_.load(std::memory_order_relaxed) + 1;
    task_.store(task);
    context_.store(context);
#if defined(__linux__)
    caller_cpu_.store(sched_getcpu());
#endif
    n_tasks_.store(n_tasks);
    helpers_.store(helpers);
    done_.store(0);
    slots_.store(tag(job, 0));
    claim_.store(tag(job, n_tasks > 0 ? 0 : kNoTask));
    {
      std::lock_guard<std::mutex> lock(wake_lock_);
      job_.store(job);
    }
    wake_.notify_all();
    return job;
  }

  // Runs tasks of `job` until none is left; counts each one done.
  void work(uint32_t job, int64_t n_tasks, ParallelTask task, void* context, int slot) {
    inside_task_ = true;
    for (;;) {
      uint64_t word = claim_.load();
      if ((word >> 32) != job || static_cast<int64_t>(word & 0xffffffffu) >= n_tasks) break;
      if (!claim_.compare_exchange_weak(word, word + 1)) continue;
      task(context, static_cast<int64_t>(word & 0xffffffffu), slot);
      if (done_.fetch_add(1) + 1 == n_tasks) {
        // Taking the lock orders this wake-up after a caller's test of done_ under it.
        { std::lock_guard<std::mutex> lock(wake_lock_); }
        finished_cv_.notify_all();
      }
    }
    inside_task_ = false;
  }

  // Spins for the last task; false when it is still running after the spin time.
  bool wait_done(int64_t n_tasks) {
    const auto start = std::chrono::steady_clock::now();
    for (int spins = 0; done_.load() < n_tasks; ++spins) {
      if ((spins & 63) == 0 && std::chrono::steady_clock::now() - start > spin_time()) return false;
      CE_PAUSE();
    }
    return true;
  }

  // `seen`: the last job published before the worker was started (it joins the next one,
  // which may be published before the new thread first runs).
  void worker_loop(uint32_t seen) {
    CpuAvoidance avoidance;
    for (;;) {
      const auto start = std::chrono::steady_clock::now();
      for (int spins = 0; job_.load() == seen; ++spins) {
        if ((spins & 63) == 0 && (callers_.load() > 1 || std::chrono::steady_clock::now() - start > spin_time())) {
          avoidance.avoid(caller_cpu_.load());
          {
            std::unique_lock<std::mutex> lock(wake_lock_);
            wake_.wait(lock, [&] { return job_.load() != seen; });
          }
          avoidance.restore(caller_cpu_.load());
          break;
        }
        CE_PAUSE();
      }
      seen = job_.load();
      // The fields may already belong to a later job; the tagged claims below catch that.
      const ParallelTask task = task_.load();
      void* const context = context_.load();
      const int64_t n_tasks = n_tasks_.load();
      const uint64_t helpers = static_cast<uint64_t>(helpers_.load());
      uint64_t word = slots_.load();
      while ((word >> 32) == seen && (word & 0xffffffffu) < helpers &&
             !slots_.compare_exchange_weak(word, word + 1)) {
      }
      if ((word >> 32) != seen || (word & 0xffffffffu) >= helpers) continue;
      work(seen, n_tasks, task, context, static_cast<int>(word & 0xffffffffu) + 1);
    }
  }

  // At least `count` workers; false when the system refuses a thread (fewer are used).
  bool grow(int count) {
    while (static_cast<int>(workers_.size()) < count) {
      try {
        const uint32_t seen = job_.load();
        workers_.emplace_back([this, seen] { worker_loop(seen); });
        workers_.back().detach();
      } catch (...) {  // std::system_error (no thread), std::bad_alloc
        return false;
      }
    }
    return true;
  }

  std::mutex job_lock_;  // held by the caller of the running loop
  std::atomic<int> callers_{0};  // threads inside run() now
  std::vector<std::thread> workers_;
  std::atomic<uint32_t> job_{0};
  std::atomic<uint64_t> claim_{tag(0, kNoTask)};
  std::atomic<uint64_t> slots_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<ParallelTask> task_{nullptr};
  std::atomic<void*> context_{nullptr};
  std::atomic<int64_t> n_tasks_{0};
  std::atomic<int> helpers_{0};
  std::atomic<int> caller_cpu_{-1};  // where the publishing caller ran (-1: unknown)
  std::mutex wake_lock_;  // orders sleeping and waking: workers on wake_, the caller on finished_cv_
  std::condition_variable wake_;
  std::condition_variable finished_cv_;
  static thread_local bool inside_task_;
};

thread_local bool Pool::inside_task_ = false;

// The workers of a parent process do not exist in a fork()ed child: its first loop makes a
// new pool (the parent's is leaked). No function-local static: a fork while another thread
// was constructing one would leave the child waiting on the static's guard forever.
std::atomic<Pool*> g_pool{nullptr};
std::atomic<bool> g_fork_handler{false};

Pool* pool() {
  Pool* current = g_pool.load();
  if (current) return current;
  Pool* fresh = new Pool;
  if (!g_pool.compare_exchange_strong(current, fresh)) {
    delete fresh;  // another thread made it first (no worker started yet)
    return current;
  }
  if (!g_fork_handler.exchange(true)) pthread_atfork(nullptr, nullptr, [] { g_pool.store(nullptr); });
  return fresh;
}

}  // namespace

void set_parallel_spin_us(int microseconds) { g_spin_us.store(microseconds < 0 ? 0 : microseconds); }

int parallel_spin_us() { return g_spin_us.load(); }

void parallel_wake(int threads) noexcept {
  try {
    pool()->wake(threads);
  } catch (...) {  // std::bad_alloc: nothing to wake
  }
}

void parallel_run(int64_t n_tasks, int threads, ParallelTask task, void* context) noexcept {
  if (n_tasks <= 0) return;
  // Past 32-bit task numbers (no kernel cuts that many) the claim word cannot count them.
  if (threads <= 1 || n_tasks == 1 || n_tasks >= static_cast<int64_t>(kNoTask)) {
    for (int64_t i = 0; i < n_tasks; ++i) task(context, i, 0);
    return;
  }
  Pool* shared = nullptr;
  try {
    shared = pool();
  } catch (...) {  // std::bad_alloc: run on the caller
    for (int64_t i = 0; i < n_tasks; ++i) task(context, i, 0);
    return;
  }
  shared->run(n_tasks, threads, task, context);
}

}  // namespace ce
