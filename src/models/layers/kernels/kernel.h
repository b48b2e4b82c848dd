// What the compiled CPU kernels share: their argument checks and their threads.
//
// Dtypes: MindSpore hands a kernel its tensors as untyped buffers, with each one's dtype by name; a kernel
// that read a float16 buffer as float32 would read past its end. Every kernel checks its dtypes first
// (HasDtypes) and returns an error (a non-zero status, which MindSpore raises as a RuntimeError) otherwise.
//
// Threads: one per CPU the process may use, the caller included, asleep between calls. Not OpenMP: libgomp's idle threads spin for a while after each parallel region
// (GOMP_SPINCOUNT, 300,000 spins while it manages no more threads than there are CPUs), and MindSpore's
// own CPU threads run the next operator meanwhile; on 2 cores that took a core from every MindSpore
// kernel that followed one of ours, and libgomp is loaded by `import mindspore`, before the kernels could
// set OMP_WAIT_POLICY. Here an idle worker blocks on a condition variable (a futex): it takes no CPU.
// Each task runs with the caller's floating-point control word (MXCSR: flush-to-zero, denormals-are-zero,
// rounding), as MindSpore's threads set theirs, whichever thread created the worker.
#pragma once
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <thread>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace vig {

// Whether the tensors params[0, n) have the dtypes named in `expected` ("float32", "int32", "uint8", ...).
inline bool HasDtypes(int nparam, const char **dtypes, std::initializer_list<const char *> expected) {
  if (dtypes == nullptr || nparam != static_cast<int>(expected.size())) return false;
  int i = 0;
  for (const char *name : expected)
    if (dtypes[i] == nullptr || std::strcmp(dtypes[i++], name) != 0) return false;
  return true;
}

inline unsigned ControlWord() {
#if defined(__x86_64__) || defined(__i386__)
  return _mm_getcsr();
#else
  return 0;
#endif
}

inline void SetControlWord([[maybe_unused]] unsigned word) {
#if defined(__x86_64__) || defined(__i386__)
  _mm_setcsr(word);
#endif
}

inline int UsableCpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

class Pool {
 public:
  // The process's pool (a new one in a forked child, whose parent's workers do not exist); never destroyed,
  // so that no exit waits for a worker.
  static Pool &Get() {
    static std::mutex guard;
    static Pool *pool = nullptr;
    static pid_t owner = 0;
    std::lock_guard<std::mutex> lock(guard);
    if (pool == nullptr || owner != getpid()) {
      pool = new Pool(UsableCpus());
      owner = getpid();
    }
    return *pool;
  }

  int threads() const { return threads_; }

  // Runs task(t) for t in [0, count), count <= threads(), and returns when all have returned. The caller and
  // the woken workers claim the tasks in turn, so a worker the OS has not scheduled yet (a busy machine)
  // delays nothing: the caller runs its task too. Which thread runs a task never changes its result.
  // Calls from several threads take turns.
  void Run(int count, const std::function<void(int)> &task) {
    std::lock_guard<std::mutex> turn(turn_);
    uint64_t generation;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      count_ = count;
      pending_ = count;
      word_ = ControlWord();
      generation = ++generation_;
      next_.store((generation & 0xffffffffu) << 32);
    }
    wake_.notify_all();
    RunClaimed(task, generation, count);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
  }

 private:
  explicit Pool(int threads) : threads_(threads) {
    for (int t = 1; t < threads; ++t) std::thread([this] { Work(); }).detach();
  }

  // Claims the next unclaimed task of call `generation` into *t; false once all are claimed or that call is
  // over (a late worker then holds no task of a call that has returned).
  bool Claim(uint64_t generation, int count, int *t) {
    uint64_t state = next_.load();
    for (;;) {
      if ((state >> 32) != (generation & 0xffffffffu) || static_cast<int>(state & 0xffffffffu) >= count) return false;
      if (next_.compare_exchange_weak(state, state + 1)) {
        *t = static_cast<int>(state & 0xffffffffu);
        return true;
      }
    }
  }

  void RunClaimed(const std::function<void(int)> &task, uint64_t generation, int count) {
    int t, finished = 0;
    while (Claim(generation, count, &t)) {
      task(t);
      ++finished;
    }
    if (finished == 0) return;
    std::lock_guard<std::mutex> lock(mutex_);
    pending_ -= finished;
    if (pending_ == 0) done_.notify_one();
  }

  void Work() {
    pthread_setname_np(pthread_self(), "vig-kernel");
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)> *task;
      int count;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        task = task_;
        count = count_;
        SetControlWord(word_);
      }
      RunClaimed(*task, seen, count);
    }
  }

  const int threads_;
  std::mutex turn_, mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int)> *task_ = nullptr;
  int count_ = 0, pending_ = 0;
  unsigned word_ = 0;
  uint64_t generation_ = 0;
  std::atomic<uint64_t> next_{0};  // the call's generation (high 32 bits) and its next unclaimed task
};

// body(begin, end) over [0, n) in contiguous ranges, one per thread, each of at least `grain` items where
// n allows (a static schedule: which thread computes an item never changes a result).
template <typename Body>
void ParallelFor(int64_t n, Body &&body, int64_t grain = 1) {
  if (n <= 0) return;
  Pool &pool = Pool::Get();
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(pool.threads(), n / std::max<int64_t>(grain, 1)));
  if (parts == 1) {
    body(int64_t{0}, n);
    return;
  }
  pool.Run(static_cast<int>(parts), [&](int t) {
    const int64_t begin = n * t / parts, end = n * (t + 1) / parts;
    if (begin < end) body(begin, end);
  });
}

}  // namespace vig
