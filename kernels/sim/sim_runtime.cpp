// The simulator's scheduler: blocks on a pool of OS threads, a block's threads as ucontext fibers.
// Compiled once into the simulated kernel library (see build.rs); C ABI entry points at the bottom.
#include "cuda_sim.h"

#include <ucontext.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace sim {

thread_local ThreadCtx* g_cur = nullptr;
thread_local BlockCtx* g_blk = nullptr;

namespace {

std::map<std::string, Thunk>& registry() {
  static std::map<std::string, Thunk> r;
  return r;
}

std::atomic<uint64_t> g_launch_counter{0};

struct Fiber {
  ucontext_t uc;
  ThreadCtx t;
};

struct Worker {
  ucontext_t sched;
  std::vector<Fiber> fibers;
  unsigned char* stacks = nullptr;
  size_t stack_bytes = 0, stack_stride = 0, nstacks = 0;
  std::vector<unsigned> order;
  std::vector<unsigned> warp_live, warp_wait;
  std::vector<WarpSlots> warps;
  std::vector<unsigned char> smem_store;
  std::string error;
  ~Worker() {
    if (stacks) munmap(stacks, stack_stride * nstacks);
  }
};

thread_local Worker* g_worker = nullptr;
thread_local Thunk g_thunk = nullptr;
thread_local void** g_args = nullptr;

struct AbortBlock {};

void fiber_entry() {
  g_thunk(g_args);
  ThreadCtx* t = g_cur;
  t->state = DONE;
  // returning resumes uc_link (the worker's scheduler context)
}

void yield_to_scheduler() {
  Fiber* f = static_cast<Fiber*>(g_cur->fiber);
  swapcontext(&f->uc, &g_worker->sched);
}

bool env_flag(const char* name) {
  const char* v = getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}

}  // namespace

Registrar::Registrar(const char* name, Thunk t) { registry()[name] = t; }

unsigned char* dyn_smem() { return g_blk->dyn_smem; }

void block_barrier() {
  g_cur->state = WAIT_BLOCK;
  yield_to_scheduler();
}

void warp_barrier() {
  g_cur->state = WAIT_WARP;
  yield_to_scheduler();
}

unsigned warp_live_mask() {
  ThreadCtx* t = g_cur;
  Worker* w = g_worker;
  unsigned base = t->warp * 32, m = 0;
  for (unsigned l = 0; l < 32 && base + l < t->blk->nthreads; l++)
    if (w->fibers[base + l].t.state != DONE) m |= 1u << l;
  return m;
}

void trap(const char* what) {
  fprintf(stderr, "rlhf-sim: %s (block %u,%u,%u thread %u,%u,%u)\n", what, g_blk ? g_blk->bid.x : 0,
          g_blk ? g_blk->bid.y : 0, g_blk ? g_blk->bid.z : 0, g_cur ? g_cur->tid.x : 0, g_cur ? g_cur->tid.y : 0,
          g_cur ? g_cur->tid.z : 0);
  abort();
}

}  // namespace sim

unsigned __ballot_sync(unsigned, int pred) {
  using namespace sim;
  // Stamp each vote with the exchange count, so lanes that have exited (stale slots) do not vote.
  ThreadCtx* t = g_cur;
  uint64_t stamp = ((t->nexch + 1) << 1) | (pred ? 1u : 0u);
  unsigned p = t->parity ^ 1u;
  (void)exchange(stamp, t->lane);
  t = g_cur;
  unsigned r = 0, base = t->warp * 32;
  for (unsigned l = 0; l < 32 && base + l < t->blk->nthreads; l++) {
    uint64_t s;
    std::memcpy(&s, t->blk->warps[t->warp].v[p][l], 8);
    if ((s >> 1) == t->nexch && (s & 1)) r |= 1u << l;
  }
  return r;
}

namespace sim {
namespace {

// Run one block to completion on this worker. Returns false (with w.error) on a deadlock.
bool run_block(Worker& w, BlockCtx& b, std::mt19937_64* rng) {
  const unsigned n = b.nthreads, nw = (n + 31) / 32;
  for (unsigned i = 0; i < n; i++) {
    Fiber& f = w.fibers[i];
    ThreadCtx& t = f.t;
    t.linear = i;
    t.tid = {i % b.bdim.x, (i / b.bdim.x) % b.bdim.y, i / (b.bdim.x * b.bdim.y)};
    t.lane = i % 32;
    t.warp = i / 32;
    t.state = RUNNABLE;
    t.parity = 0;
    t.nexch = 0;
    t.blk = &b;
    t.fiber = &f;
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = w.stacks + i * w.stack_stride + 4096;  // lowest page is a guard
    f.uc.uc_stack.ss_size = w.stack_bytes;
    f.uc.uc_link = &w.sched;
    makecontext(&f.uc, fiber_entry, 0);
  }
  w.warp_live.assign(nw, 0);
  w.warp_wait.assign(nw, 0);
  for (unsigned i = 0; i < n; i++) w.warp_live[i / 32]++;
  unsigned live = n, block_wait = 0;
  w.order.resize(n);
  for (unsigned i = 0; i < n; i++) w.order[i] = i;

  auto release_warp_if_complete = [&](unsigned wi) {
    if (w.warp_wait[wi] > 0 && w.warp_wait[wi] == w.warp_live[wi]) {
      for (unsigned l = wi * 32; l < std::min(n, wi * 32 + 32); l++)
        if (w.fibers[l].t.state == WAIT_WARP) w.fibers[l].t.state = RUNNABLE;
      w.warp_wait[wi] = 0;
    }
  };
  auto release_block_if_complete = [&]() {
    if (block_wait > 0 && block_wait == live) {
      for (unsigned i = 0; i < n; i++)
        if (w.fibers[i].t.state == WAIT_BLOCK) w.fibers[i].t.state = RUNNABLE;
      block_wait = 0;
    }
  };

  while (live > 0) {
    if (rng) std::shuffle(w.order.begin(), w.order.end(), *rng);
    bool ran = false;
    for (unsigned k = 0; k < n; k++) {
      Fiber& f = w.fibers[w.order[k]];
      if (f.t.state != RUNNABLE) continue;
      ran = true;
      g_cur = &f.t;
      swapcontext(&w.sched, &f.uc);
      const unsigned wi = f.t.warp;
      switch (f.t.state) {
        case DONE:
          live--;
          w.warp_live[wi]--;
          release_warp_if_complete(wi);
          release_block_if_complete();
          break;
        case WAIT_WARP:
          w.warp_wait[wi]++;
          release_warp_if_complete(wi);
          break;
        case WAIT_BLOCK:
          block_wait++;
          release_block_if_complete();
          break;
        default:
          break;
      }
    }
    if (!ran && live > 0) {
      char buf[256];
      snprintf(buf, sizeof buf,
               "deadlock in block (%u,%u,%u): %u live threads, %u at __syncthreads, the rest at warp barriers "
               "(divergent barrier or shuffle)",
               b.bid.x, b.bid.y, b.bid.z, live, block_wait);
      w.error = buf;
      return false;
    }
  }
  return true;
}

}  // namespace
}  // namespace sim

// ---------------------------------------------------------------------------------------------------------
// C ABI
extern "C" {

int rlhf_sim_kernel_count() { return (int)sim::registry().size(); }

const char* rlhf_sim_kernel_name(int i) {
  auto& r = sim::registry();
  if (i < 0 || i >= (int)r.size()) return nullptr;
  auto it = r.begin();
  std::advance(it, i);
  return it->first.c_str();
}

int rlhf_sim_has_kernel(const char* name) { return sim::registry().count(name) ? 1 : 0; }

// Launch `name` like cuLaunchKernel: args[i] points at the i-th kernel parameter's value.
// race: -1 = from env RLHF_SIM_RACE (seed RLHF_SIM_SEED), 0 = off, 1 = on with `seed`.
// workers: OS threads running blocks (0 = env RLHF_SIM_THREADS or the hardware concurrency).
// Returns 0 on success; otherwise writes a message to err.
int rlhf_sim_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                    unsigned smem, void** args, int race_opt, uint64_t seed_opt, int workers_opt, char* err,
                    size_t errlen) {
  using namespace sim;
  auto fail = [&](const std::string& m) {
    snprintf(err, errlen, "%s", m.c_str());
    return 1;
  };
  auto it = registry().find(name);
  if (it == registry().end()) return fail(std::string("no simulated kernel named ") + name);
  Thunk thunk = it->second;
  const uint64_t nthreads = (uint64_t)bx * by * bz;
  if (gx == 0 || gy == 0 || gz == 0 || nthreads == 0) return fail("empty grid or block");
  if (nthreads > 1024 || bz > 64) return fail("block of " + std::to_string(nthreads) + " threads (max 1024, z <= 64)");
  if (gy > 65535 || gz > 65535) return fail("grid y/z over 65535");
  if (smem > 227 * 1024) return fail("dynamic shared memory of " + std::to_string(smem) + " bytes (max 227 KiB)");

  bool race = race_opt < 0 ? env_flag("RLHF_SIM_RACE") : race_opt > 0;
  uint64_t seed = seed_opt;
  if (race_opt < 0 && getenv("RLHF_SIM_SEED")) seed = strtoull(getenv("RLHF_SIM_SEED"), nullptr, 10);
  seed ^= 0x9e3779b97f4a7c15ull * (g_launch_counter.fetch_add(1) + 1);
  int workers = workers_opt;
  if (workers <= 0 && getenv("RLHF_SIM_THREADS")) workers = atoi(getenv("RLHF_SIM_THREADS"));
  if (workers <= 0) workers = (int)std::max(1u, std::thread::hardware_concurrency());
  size_t stack = 64 * 1024;
  if (getenv("RLHF_SIM_STACK_KB")) stack = (size_t)atoi(getenv("RLHF_SIM_STACK_KB")) * 1024;

  const uint64_t nblocks = (uint64_t)gx * gy * gz;
  workers = (int)std::min<uint64_t>((uint64_t)workers, nblocks);
  std::vector<uint64_t> block_order;
  if (race) {
    block_order.resize(nblocks);
    for (uint64_t i = 0; i < nblocks; i++) block_order[i] = i;
    std::mt19937_64 r(seed);
    std::shuffle(block_order.begin(), block_order.end(), r);
  }
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::string first_error;
  std::mutex err_mu;

  auto work = [&](int wid) {
    Worker w;
    g_worker = &w;
    g_thunk = thunk;
    g_args = args;
    w.stack_bytes = stack;
    w.stack_stride = stack + 4096;
    w.nstacks = nthreads;
    void* m = mmap(nullptr, w.stack_stride * nthreads, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
      std::lock_guard<std::mutex> g(err_mu);
      if (first_error.empty()) first_error = "mmap of fiber stacks failed";
      failed = true;
      return;
    }
    w.stacks = static_cast<unsigned char*>(m);
    for (uint64_t i = 0; i < nthreads; i++) mprotect(w.stacks + i * w.stack_stride, 4096, PROT_NONE);
    w.fibers.resize(nthreads);
    w.warps.resize((nthreads + 31) / 32);
    w.smem_store.resize(smem + 16);
    std::mt19937_64 rng(seed + 0x51ed270b27u * (uint64_t)(wid + 1));
    BlockCtx b;
    b.bdim = dim3(bx, by, bz);
    b.gdim = dim3(gx, gy, gz);
    b.dyn_smem = smem ? w.smem_store.data() : nullptr;
    b.dyn_smem_bytes = smem;
    b.warps = w.warps.data();
    b.nthreads = (unsigned)nthreads;
    while (!failed) {
      uint64_t k = next.fetch_add(1);
      if (k >= nblocks) break;
      uint64_t id = race ? block_order[k] : k;
      b.bid = {(unsigned)(id % gx), (unsigned)((id / gx) % gy), (unsigned)(id / ((uint64_t)gx * gy))};
      // Dynamic shared memory starts as NaN-ish garbage (0xff bytes) in every block, as on the GPU it
      // holds whatever the previous block left.
      if (smem) memset(b.dyn_smem, 0xff, smem);
      g_blk = &b;
      if (!run_block(w, b, race ? &rng : nullptr)) {
        std::lock_guard<std::mutex> g(err_mu);
        if (first_error.empty()) first_error = w.error;
        failed = true;
      }
      g_blk = nullptr;
      g_cur = nullptr;
    }
    g_worker = nullptr;
  };

  if (workers <= 1) {
    work(0);
  } else {
    std::vector<std::thread> ts;
    for (int i = 0; i < workers; i++) ts.emplace_back(work, i);
    for (auto& t : ts) t.join();
  }
  if (failed) return fail(std::string(name) + ": " + first_error);
  return 0;
}

}  // extern "C"
