// The runtime of the CUDA emulation (see cuda_emu.h): the kernel registry,
// ft_emu_launch, and three ways to run a launch's threads:
// - kernels without barriers or shuffles: every thread of every block in
//   turn on the launching thread;
// - kernels that synchronise: the threads of a block as fibers (ucontext)
//   on the launching thread, switching at barriers and shuffles, block
//   after block (fast, deterministic);
// - with FT_EMU_THREADS=1 (the ThreadSanitizer driver): the threads of a
//   block as OS threads of a persistent pool, so that a missing barrier is
//   a real data race.

#include "emu_runtime.h"

#include <setjmp.h>
#include <ucontext.h>

#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ft_emu {

thread_local ThreadState tls;
dim3 launch_block_dim;
dim3 launch_grid_dim;

class Barrier {
  public:
    void reset(unsigned int members) {
        std::lock_guard<std::mutex> lock(mutex_);
        expected_ = members;
        arrived_ = 0;
    }
    void arrive_and_wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        unsigned long long generation = generation_;
        if (++arrived_ == expected_) {
            release();
        } else {
            cv_.wait(lock, [&] { return generation_ != generation; });
        }
    }
    // The caller leaves: it is no longer waited for.
    void leave() {
        std::lock_guard<std::mutex> lock(mutex_);
        --expected_;
        if (arrived_ > 0 && arrived_ == expected_) {
            release();
        }
    }

  private:
    void release() {
        arrived_ = 0;
        ++generation_;
        cv_.notify_all();
    }
    std::mutex mutex_;
    std::condition_variable cv_;
    unsigned int expected_ = 0;
    unsigned int arrived_ = 0;
    unsigned long long generation_ = 0;
};

// ---------------------------------------------------------------------------
// Fibers: the threads of one block on one OS thread.
//
// A fiber is made once (makecontext, entered the first time with
// swapcontext) and lives on: its entry loops forever, running the kernel for
// whichever block the scheduler hands it, so every later switch is a plain
// _setjmp/_longjmp between the scheduler and the fiber (no system call).

namespace {

constexpr std::size_t kFiberStack = 256 * 1024;

struct Fiber {
    ucontext_t start;
    jmp_buf context;
    std::unique_ptr<char[]> stack;
    bool started = false;
    dim3 thread_idx;
    unsigned int lane = 0;
    bool done = false;
    // 0: running or runnable, 1: at the block barrier, 2: at its warp's barrier
    int waiting = 0;
    unsigned long long wait_generation = 0;
};

struct Group {
    unsigned long long generation = 0;
    unsigned int arrived = 0;
    unsigned int live = 0;
};

struct Scheduler {
    jmp_buf main;
    std::vector<Fiber> fibers;
    unsigned int current = 0;
    Group block;
    std::vector<Group> warps;
    std::vector<std::vector<unsigned long long>> warp_slots;
    const Kernel* kernel = nullptr;
    void** params = nullptr;
};

thread_local Scheduler* scheduler = nullptr;

void release(Group& g) {
    g.arrived = 0;
    ++g.generation;
}

// Back to the scheduler; returns when the scheduler resumes this fiber.
void yield_to_scheduler() {
    Scheduler& s = *scheduler;
    if (_setjmp(s.fibers[s.current].context) == 0) {
        _longjmp(s.main, 1);
    }
}

// The current fiber waits at `g` (kind 1 block, 2 warp) until all its live members arrive.
void fiber_wait(Group& g, int kind) {
    Scheduler& s = *scheduler;
    Fiber& f = s.fibers[s.current];
    if (++g.arrived == g.live) {
        release(g);
        return;
    }
    f.waiting = kind;
    f.wait_generation = g.generation;
    yield_to_scheduler();
}

void fiber_entry() {
    for (;;) {
        Scheduler& s = *scheduler;
        (*s.kernel)(s.params);
        Fiber& f = s.fibers[s.current];
        f.done = true;
        // a finished thread no longer counts at the barriers
        for (Group* g : {&s.block, &s.warps[s.current / 32]}) {
            --g->live;
            if (g->arrived > 0 && g->arrived == g->live) {
                release(*g);
            }
        }
        yield_to_scheduler();
    }
}

// Switches from the scheduler into fiber `t` until it yields.
void enter(Scheduler& s, unsigned int t) {
    Fiber& f = s.fibers[t];
    if (_setjmp(s.main) == 0) {
        if (!f.started) {
            f.started = true;
            ucontext_t from;
            getcontext(&f.start);
            f.start.uc_stack.ss_sp = f.stack.get();
            f.start.uc_stack.ss_size = kFiberStack;
            f.start.uc_link = nullptr;
            makecontext(&f.start, fiber_entry, 0);
            swapcontext(&from, &f.start);
        } else {
            _longjmp(f.context, 1);
        }
    }
}

// Runs the launch's blocks one after another, each block's threads as fibers.
void run_fibers(const Kernel& kernel, void** params, dim3 grid, dim3 block) {
    static thread_local Scheduler s;
    unsigned int threads = block.x * block.y * block.z;
    while (s.fibers.size() < threads) {
        s.fibers.emplace_back();
        s.fibers.back().stack.reset(new char[kFiberStack]);
    }
    s.warps.assign((threads + 31) / 32, Group{});
    s.warp_slots.assign((threads + 31) / 32, std::vector<unsigned long long>(32, 0));
    s.kernel = &kernel;
    s.params = params;
    scheduler = &s;
    for (unsigned long long b = 0; b < 1ull * grid.x * grid.y * grid.z; ++b) {
        dim3 block_idx{static_cast<unsigned int>(b % grid.x), static_cast<unsigned int>(b / grid.x % grid.y),
                       static_cast<unsigned int>(b / (1ull * grid.x * grid.y))};
        s.block = Group{0, 0, threads};
        for (unsigned int w = 0; w < s.warps.size(); ++w) {
            s.warps[w] = Group{0, 0, std::min(32u, threads - 32 * w)};
        }
        for (unsigned int t = 0; t < threads; ++t) {
            Fiber& f = s.fibers[t];
            f.thread_idx = dim3{t % block.x, t / block.x % block.y, t / (block.x * block.y)};
            f.lane = t % 32;
            f.done = false;
            f.waiting = 0;
        }
        unsigned int finished = 0;
        while (finished < threads) {
            bool progress = false;
            for (unsigned int t = 0; t < threads; ++t) {
                Fiber& f = s.fibers[t];
                if (f.done) {
                    continue;
                }
                if (f.waiting != 0) {
                    const Group& g = f.waiting == 1 ? s.block : s.warps[t / 32];
                    if (g.generation == f.wait_generation) {
                        continue;  // not released yet
                    }
                    f.waiting = 0;
                }
                s.current = t;
                tls.thread_idx = f.thread_idx;
                tls.block_idx = block_idx;
                tls.lane = f.lane;
                tls.block = nullptr;
                tls.warp = nullptr;
                tls.warp_slots = s.warp_slots[t / 32].data();
                enter(s, t);
                progress = true;
                if (f.done) {
                    ++finished;
                }
            }
            if (!progress) {
                std::fprintf(stderr, "ft_emu: the threads of a block wait at different barriers (deadlock)\n");
                std::abort();
            }
        }
    }
    scheduler = nullptr;
}

}  // namespace

void block_sync() {
    if (scheduler != nullptr) {
        fiber_wait(scheduler->block, 1);
    } else {
        tls.block->arrive_and_wait();
    }
}

void warp_sync() {
    if (scheduler != nullptr) {
        fiber_wait(scheduler->warps[scheduler->current / 32], 2);
    } else {
        tls.warp->arrive_and_wait();
    }
}

namespace {

constexpr unsigned int kMaxThreads = 1024;

struct Entry {
    Kernel kernel;
    bool threaded = true;
};

std::map<std::string, Entry>& registry() {
    static std::map<std::string, Entry> kernels;
    return kernels;
}

bool threads_everywhere() {
    static const bool forced = [] {
        const char* v = std::getenv("FT_EMU_THREADS");
        return v != nullptr && std::string(v) == "1";
    }();
    return forced;
}

// Runs every thread of every block on the calling thread, one after another
// (kernels without barriers or shuffles only).
void run_sequentially(const Kernel& kernel, void** params, dim3 grid, dim3 block) {
    for (unsigned int bz = 0; bz < grid.z; ++bz)
        for (unsigned int by = 0; by < grid.y; ++by)
            for (unsigned int bx = 0; bx < grid.x; ++bx)
                for (unsigned int tz = 0; tz < block.z; ++tz)
                    for (unsigned int ty = 0; ty < block.y; ++ty)
                        for (unsigned int tx = 0; tx < block.x; ++tx) {
                            tls.block_idx = dim3{bx, by, bz};
                            tls.thread_idx = dim3{tx, ty, tz};
                            tls.lane = (tx + block.x * (ty + block.y * tz)) % 32;
                            tls.block = nullptr;
                            tls.warp = nullptr;
                            kernel(params);
                        }
}

// One launch in flight: what the workers run.
struct Job {
    const Kernel* kernel = nullptr;
    void** params = nullptr;
    unsigned int threads = 0;
    unsigned long long blocks = 0;
};

// Resets the block and warp barriers between two blocks of a launch.
struct ResetBarriers {
    Barrier* block;
    std::vector<Barrier>* warps;
    unsigned int threads;
    void operator()() noexcept {
        block->reset(threads);
        for (unsigned int w = 0; w < (threads + 31) / 32; ++w) {
            (*warps)[w].reset(std::min(32u, threads - 32 * w));
        }
    }
};

class Pool {
  public:
    // never destroyed: the workers wait on its condition variable until the
    // process ends, and destroying it under them would hang the exit
    static Pool& get() {
        static Pool* pool = new Pool();
        return *pool;
    }

    // The launch's threads run together, block after block: every worker
    // runs its thread of each block in turn, and a barrier between blocks
    // (whose completion resets the block and warp barriers) keeps the next
    // block from starting before the last one has finished with the
    // (static) shared memory.
    void run(const Job& job) {
        std::unique_lock<std::mutex> lock(mutex_);
        ensure_workers(job.threads);
        job_ = job;
        for (unsigned int w = 0; w < (job.threads + 31) / 32; ++w) {
            warp_slots_[w].assign(32, 0);
        }
        ResetBarriers reset{&block_, &warp_barriers_, job.threads};
        reset();
        boundary_ = std::make_unique<std::barrier<ResetBarriers>>(job.threads, reset);
        remaining_ = job.threads;
        ++round_;
        start_.notify_all();
        done_.wait(lock, [&] { return remaining_ == 0; });
        boundary_.reset();
    }

  private:
    Pool() : warp_barriers_(kMaxThreads / 32), warp_slots_(kMaxThreads / 32) {}

    void ensure_workers(unsigned int n) {
        while (workers_.size() < n) {
            unsigned int index = static_cast<unsigned int>(workers_.size());
            workers_.emplace_back([this, index] { work(index); });
            workers_.back().detach();
        }
    }

    void work(unsigned int index) {
        unsigned long long seen = 0;
        for (;;) {
            Job job;
            std::barrier<ResetBarriers>* boundary = nullptr;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                start_.wait(lock, [&] { return round_ != seen && index < job_.threads; });
                seen = round_;
                job = job_;
                boundary = boundary_.get();
            }
            unsigned int bx = launch_block_dim.x, by = launch_block_dim.y;
            tls.thread_idx.x = index % bx;
            tls.thread_idx.y = index / bx % by;
            tls.thread_idx.z = index / (bx * by);
            tls.lane = index % 32;
            tls.block = &block_;
            tls.warp = &warp_barriers_[index / 32];
            tls.warp_slots = warp_slots_[index / 32].data();
            unsigned long long gx = launch_grid_dim.x, gy = launch_grid_dim.y;
            for (unsigned long long block = 0; block < job.blocks; ++block) {
                tls.block_idx.x = static_cast<unsigned int>(block % gx);
                tls.block_idx.y = static_cast<unsigned int>(block / gx % gy);
                tls.block_idx.z = static_cast<unsigned int>(block / (gx * gy));
                (*job.kernel)(job.params);
                tls.warp->leave();
                tls.block->leave();
                boundary->arrive_and_wait();
            }
            {
                std::lock_guard<std::mutex> lock(mutex_);
                if (--remaining_ == 0) {
                    done_.notify_all();
                }
            }
        }
    }

    std::mutex mutex_;
    std::condition_variable start_;
    std::condition_variable done_;
    std::vector<std::thread> workers_;
    Job job_;
    unsigned long long round_ = 0;
    unsigned int remaining_ = 0;
    Barrier block_;
    std::vector<Barrier> warp_barriers_;
    std::vector<std::vector<unsigned long long>> warp_slots_;
    std::unique_ptr<std::barrier<ResetBarriers>> boundary_;
};

std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

}  // namespace

void add_kernel(const char* name, Kernel kernel, bool threaded) {
    registry()[name] = Entry{std::move(kernel), threaded};
}

namespace {
void register_once() {
    static std::once_flag once;
    std::call_once(once, ft_emu_register_all);
}
}  // namespace

}  // namespace ft_emu

extern "C" int ft_emu_launch(const char* name, const unsigned int grid[3], const unsigned int block[3],
                             void** params) {
    using namespace ft_emu;
    register_once();
    std::lock_guard<std::mutex> serial(launch_mutex());
    auto found = registry().find(name);
    if (found == registry().end()) {
        return 1;
    }
    unsigned long long threads = 1ull * block[0] * block[1] * block[2];
    unsigned long long blocks = 1ull * grid[0] * grid[1] * grid[2];
    if (threads == 0 || threads > kMaxThreads || blocks == 0) {
        return 2;
    }
    launch_block_dim = dim3{block[0], block[1], block[2]};
    launch_grid_dim = dim3{grid[0], grid[1], grid[2]};
    if (!threads_everywhere()) {
        if (found->second.threaded) {
            run_fibers(found->second.kernel, params, launch_grid_dim, launch_block_dim);
        } else {
            run_sequentially(found->second.kernel, params, launch_grid_dim, launch_block_dim);
        }
        return 0;
    }
    Job job;
    job.kernel = &found->second.kernel;
    job.params = params;
    job.threads = static_cast<unsigned int>(threads);
    job.blocks = blocks;
    Pool::get().run(job);
    return 0;
}

extern "C" int ft_emu_has_kernel(const char* name) {
    ft_emu::register_once();
    return ft_emu::registry().count(name) ? 1 : 0;
}
