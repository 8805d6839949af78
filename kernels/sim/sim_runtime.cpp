// The simulator's scheduler: blocks on a pool of OS threads, a block's threads as ucontext fibers, and the race
// checker. Compiled into the simulated kernel library without instrumentation, beside the kernel files compiled
// with -fsanitize=thread (see build.rs); C ABI entry points at the bottom.
#include "cuda_sim.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <ucontext.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
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

// ---- race checker state. One shadow record per 2-byte granule of shared memory (no kernel accesses shared
// memory in single bytes): the last writer and up to two readers since that write, each with the thread's
// barrier epochs at the access and the code address of the access (symbolised only when reported).
struct Acc {
  const void* pc;
  uint32_t gen;  // block generation on this worker; a record of another block is empty
  uint32_t bep, wep;
  uint16_t tid;   // linear thread index in the block
  uint16_t coll;  // written inside a warp-collective store
};
struct Cell {
  Acc w, r1, r2;
};
struct Shadow {
  uintptr_t lo = 0;
  size_t len = 0;
  std::vector<Cell> cells;
  const char* what = "";
  const char* module = nullptr;
};
struct Hazard {
  const char* kind = nullptr;  // "read-after-write", ...; "uninitialized read": no earlier access (pa null)
  const char* region = nullptr;
  const char* module = nullptr;  // static __shared__: the module whose TLS segment holds it
  size_t offset = 0;
  uint3 bid{};
  unsigned a = 0, b = 0;  // earlier and later thread (linear)
  const void* pa = nullptr;
  const void* pb = nullptr;
  uint32_t bep = 0;
  bool same_warp = false;
};

// The first out-of-bounds access of a launch on a worker: an index out of an array's range (-fsanitize=bounds:
// `where`, `array`, `index`) or an access outside the dynamic shared memory (race checker: `pc`, `index` = byte
// offset, `smem` = its size).
struct OutOfBounds {
  std::string where, array;
  long long index = 0;
  const void* pc = nullptr;
  size_t smem = 0;
  uint3 bid{};
  unsigned thread = 0;
};

constexpr size_t SMEM_GUARD = 64;  // bytes on each side of the dynamic shared memory

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
  // race checker
  bool check = false;
  uint32_t gen = 0;
  Shadow dyn, stat;
  Hazard hazard;
  uint64_t nhazards = 0;
  Hazard uninit;  // the first uninitialized read (reported only when the launch has no race hazard)
  uint64_t nuninit = 0;
  // array bounds (always on)
  OutOfBounds oob;
  uint64_t noob = 0;
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
  g_cur->bep++;
}

void warp_barrier(bool orders_memory) {
  g_cur->state = WAIT_WARP;
  yield_to_scheduler();
  if (orders_memory) g_cur->wep++;
}

const uint3& cur_tid() { return g_cur->tid; }
const uint3& cur_bid() { return g_blk->bid; }
const dim3& cur_bdim() { return g_blk->bdim; }
const dim3& cur_gdim() { return g_blk->gdim; }
void collective_begin() { g_cur->coll = 1; }
void collective_end() { g_cur->coll = 0; }

// ---------------------------------------------------------------------------------------------------------
// Race checker. Two accesses to a shared-memory byte, by different threads of a block, at least one a write,
// are ordered when a __syncthreads lies between them (the block epochs differ) or, for two lanes of one warp,
// a warp barrier (__syncwarp, a WMMA load/store: the warp epochs differ; a shuffle or ballot is not a memory
// barrier, on the GPU either). Anything else is a hazard. So is a read of shared memory no thread of the block
// has written (uninitialized), and an access outside the launch's dynamic shared memory. Atomics are not instrumented (exempt). The identical stores of a WMMA store_matrix_sync by the lanes
// of one warp are one collective store, not a write-after-write.
namespace {

inline bool unordered(const Acc& p, const ThreadCtx* t, uint32_t gen) {
  if (p.gen != gen || p.tid == t->linear || p.bep != t->bep) return false;
  if (p.tid / 32 == t->warp) return p.wep == t->wep && !(p.coll && t->coll);
  return true;
}

void report(Worker* w, const char* kind, const Shadow& sh, size_t off, const Acc& p, const void* pc) {
  ThreadCtx* t = g_cur;
  if (w->nhazards++ > 0) return;
  Hazard& h = w->hazard;
  h.kind = kind;
  h.region = sh.what;
  h.module = sh.module;
  h.offset = off;
  h.bid = g_blk->bid;
  h.a = p.tid;
  h.b = t->linear;
  h.pa = p.pc;
  h.pb = pc;
  h.bep = t->bep;
  h.same_warp = p.tid / 32 == t->warp;
}

void report_uninit(Worker* w, const Shadow& sh, size_t off, const void* pc) {
  ThreadCtx* t = g_cur;
  if (w->nuninit++ > 0) return;
  Hazard& h = w->uninit;
  h.kind = "uninitialized read";
  h.region = sh.what;
  h.module = sh.module;
  h.offset = off;
  h.bid = g_blk->bid;
  h.a = h.b = t->linear;
  h.pa = nullptr;
  h.pb = pc;
  h.bep = t->bep;
  h.same_warp = false;
}

inline void set(Acc& a, const ThreadCtx* t, uint32_t gen, const void* pc) {
  a.pc = pc;
  a.gen = gen;
  a.bep = t->bep;
  a.wep = t->wep;
  a.tid = (uint16_t)t->linear;
  a.coll = (uint16_t)t->coll;
}

void on_access(const void* addr, size_t n, bool write, const void* pc) {
  Worker* w = g_worker;
  if (!w || !w->check || !g_cur) return;
  const uintptr_t x = (uintptr_t)addr;
  Shadow* sh;
  if (x - w->dyn.lo < w->dyn.len && x + n - w->dyn.lo <= w->dyn.len) {
    sh = &w->dyn;
  } else if (w->dyn.len && x + n > w->dyn.lo - SMEM_GUARD && x < w->dyn.lo + w->dyn.len + SMEM_GUARD) {
    if (w->noob++ == 0) {
      w->oob.index = (long long)(x - w->dyn.lo);
      w->oob.pc = pc;
      w->oob.smem = w->dyn.len;
      w->oob.bid = g_blk->bid;
      w->oob.thread = g_cur->linear;
    }
    return;
  } else if (x - w->stat.lo < w->stat.len) {
    // The simulator's own thread-locals that inline simulator code in kernels reads (not __shared__ memory).
    if (x - (uintptr_t)&g_cur < sizeof g_cur || x - (uintptr_t)&g_blk < sizeof g_blk) return;
    sh = &w->stat;
  } else {
    return;  // global memory, fiber stacks (locals)
  }
  const ThreadCtx* t = g_cur;
  const uint32_t gen = w->gen;
  const size_t g0 = (x - sh->lo) >> 1, g1 = std::min((x - sh->lo + n - 1) >> 1, sh->cells.size() - 1);
  for (size_t g = g0; g <= g1; g++) {
    Cell& c = sh->cells[g];
    const size_t off = g * 2;
    if (write) {
      if (unordered(c.w, t, gen)) report(w, "write-after-write", *sh, off, c.w, pc);
      if (unordered(c.r1, t, gen)) report(w, "write-after-read", *sh, off, c.r1, pc);
      if (unordered(c.r2, t, gen)) report(w, "write-after-read", *sh, off, c.r2, pc);
      set(c.w, t, gen, pc);
      c.r1.gen = c.r2.gen = 0;
    } else {
      // No thread of this block wrote it: on the GPU, whatever an earlier block left there.
      if (c.w.gen != gen) report_uninit(w, *sh, off, pc);
      if (unordered(c.w, t, gen)) report(w, "read-after-write", *sh, off, c.w, pc);
      // Readers from an earlier block epoch are ordered before everything that follows: forget them. Keep
      // two readers, preferring two different warps (a later write conflicts with a reader of another warp
      // whatever its warp epoch), and the later of two readers of one warp.
      auto live = [&](const Acc& r) { return r.gen == gen && r.bep == t->bep; };
      if (!live(c.r1) || c.r1.tid == t->linear) {
        set(c.r1, t, gen, pc);
        if (!live(c.r2)) c.r2.gen = 0;
      } else if (!live(c.r2) || c.r2.tid == t->linear) {
        set(c.r2, t, gen, pc);
      } else if (c.r1.tid / 32 == c.r2.tid / 32 || c.r2.tid / 32 == t->warp) {
        set(c.r2, t, gen, pc);
      } else if (c.r1.tid / 32 == t->warp) {
        set(c.r1, t, gen, pc);
      }
    }
  }
}

// The calling thread's copy of the TLS segment of the module holding the simulator (and so the kernels'
// static __shared__ variables, which are `static thread_local`).
int find_tls(struct dl_phdr_info* info, size_t, void* data) {
  Shadow* sh = static_cast<Shadow*>(data);
  if (!info->dlpi_tls_data) return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    if (info->dlpi_phdr[i].p_type != PT_TLS) continue;
    uintptr_t lo = (uintptr_t)info->dlpi_tls_data, hi = lo + info->dlpi_phdr[i].p_memsz;
    uintptr_t me = (uintptr_t)&g_worker;
    if (me >= lo && me < hi) {
      sh->module = info->dlpi_name ? info->dlpi_name : "";
      sh->lo = lo;
      sh->len = hi - lo;
      return 1;
    }
  }
  return 0;
}

}  // namespace

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

// ---------------------------------------------------------------------------------------------------------
// The -fsanitize=thread instrumentation of the kernel files calls these for every memory access.
extern "C" {
#define RLHF_TSAN_RW(n)                                                                                         \
  void __tsan_read##n(void* a) { sim::on_access(a, n, false, __builtin_return_address(0)); }                    \
  void __tsan_write##n(void* a) { sim::on_access(a, n, true, __builtin_return_address(0)); }                    \
  void __tsan_unaligned_read##n(void* a) { sim::on_access(a, n, false, __builtin_return_address(0)); }          \
  void __tsan_unaligned_write##n(void* a) { sim::on_access(a, n, true, __builtin_return_address(0)); }          \
  void __tsan_volatile_read##n(void* a) { sim::on_access(a, n, false, __builtin_return_address(0)); }           \
  void __tsan_volatile_write##n(void* a) { sim::on_access(a, n, true, __builtin_return_address(0)); }
RLHF_TSAN_RW(1)
RLHF_TSAN_RW(2)
RLHF_TSAN_RW(4)
RLHF_TSAN_RW(8)
RLHF_TSAN_RW(16)
#undef RLHF_TSAN_RW
void __tsan_read_range(void* a, size_t n) { sim::on_access(a, n, false, __builtin_return_address(0)); }
void __tsan_write_range(void* a, size_t n) { sim::on_access(a, n, true, __builtin_return_address(0)); }
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
}

// ---------------------------------------------------------------------------------------------------------
// Array bounds: the kernel files are also compiled with -fsanitize=bounds, whose check of every index into an
// array of known size (a thread's local arrays, a struct's member arrays) calls this on an index out of range
// (no sanitizer runtime is linked; GCC's data layout). The first one of a launch fails the launch.
namespace sim {
namespace {
struct UbsanLocation {
  const char* file;
  uint32_t line, column;
};
struct UbsanType {
  uint16_t kind, info;  // kind 0: integer (info bit 0: signed)
  char name[1];
};
struct UbsanOutOfBounds {
  UbsanLocation loc;
  const UbsanType* array;
  const UbsanType* index;
};

void on_out_of_bounds(const UbsanOutOfBounds* d, uintptr_t index) {
  const bool is_signed = d->index && d->index->kind == 0 && (d->index->info & 1);
  const unsigned bits = d->index && d->index->kind == 0 ? 1u << (d->index->info >> 1) : 64;
  long long ix = (long long)index;
  if (is_signed && bits < 64) ix = (long long)(((int64_t)index << (64 - bits)) >> (64 - bits));
  std::string file = d->loc.file ? d->loc.file : "?";
  size_t k = file.rfind("kernels/");
  if (k != std::string::npos) file = file.substr(k);
  char buf[64];
  snprintf(buf, sizeof buf, ":%u:%u", d->loc.line, d->loc.column);
  Worker* w = g_worker;
  if (!w || !g_cur || !g_blk) {
    fprintf(stderr, "rlhf-sim: array index %lld out of bounds at %s%s\n", ix, file.c_str(), buf);
    abort();
  }
  if (w->noob++ > 0) return;
  w->oob.where = file + buf;
  w->oob.array = d->array ? d->array->name : "?";
  w->oob.index = ix;
  w->oob.bid = g_blk->bid;
  w->oob.thread = g_cur->linear;
}
}  // namespace
}  // namespace sim

extern "C" {
void __ubsan_handle_out_of_bounds(void* data, void* index) {
  sim::on_out_of_bounds(static_cast<const sim::UbsanOutOfBounds*>(data), (uintptr_t)index);
}
void __ubsan_handle_out_of_bounds_abort(void* data, void* index) {
  sim::on_out_of_bounds(static_cast<const sim::UbsanOutOfBounds*>(data), (uintptr_t)index);
}
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
    t.bep = t.wep = t.coll = 0;
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
  uint64_t block_releases = 0;
  auto release_block_if_complete = [&]() {
    if (block_wait > 0 && block_wait == live) {
      for (unsigned i = 0; i < n; i++)
        if (w.fibers[i].t.state == WAIT_BLOCK) w.fibers[i].t.state = RUNNABLE;
      block_wait = 0;
      block_releases++;
    }
  };
  // Resumes fiber i until its next scheduling point.
  auto resume = [&](unsigned i) {
    Fiber& f = w.fibers[i];
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
  };

  // Race mode: between two __syncthreads, one warp (the lead, chosen at random) runs `ahead` warp-level steps
  // (segments between scheduling points) for every one step of the others, so a warp that goes on to the next
  // tile while others still work on this one does so in the simulator too.
  unsigned lead = ~0u, ahead = 0;
  uint64_t releases_seen = 0;
  auto pick_lead = [&]() {
    if (rng && nw > 1) {
      lead = (unsigned)((*rng)() % nw);
      ahead = 2 + (unsigned)((*rng)() % 15);
    }
  };
  pick_lead();

  while (live > 0) {
    if (rng) std::shuffle(w.order.begin(), w.order.end(), *rng);
    bool ran = false;
    if (lead != ~0u) {
      for (unsigned step = 0; step < ahead; step++) {
        bool any = false;
        for (unsigned k = 0; k < n; k++) {
          const unsigned i = w.order[k];
          if (i / 32 != lead || w.fibers[i].t.state != RUNNABLE) continue;
          any = true;
          resume(i);
        }
        if (!any) break;
        ran = true;
      }
    }
    for (unsigned k = 0; k < n; k++) {
      if (w.fibers[w.order[k]].t.state != RUNNABLE) continue;
      ran = true;
      resume(w.order[k]);
    }
    if (block_releases != releases_seen) {
      releases_seen = block_releases;
      pick_lead();
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

namespace sim {
namespace {

// "file:line `source text`" for a code address of the instrumented kernels (addr2line over the module's debug
// line table, inlined frames innermost first), or the raw address when that fails.
// This process's executable (for the tools run below, "/proc/self/exe" would be themselves).
std::string self_exe() {
  char b[4096];
  ssize_t n = readlink("/proc/self/exe", b, sizeof b - 1);
  if (n <= 0) return "/proc/self/exe";
  b[n] = 0;
  return b;
}

std::string where(const void* pc) {
  char buf[64];
  snprintf(buf, sizeof buf, "%p", pc);
  std::string raw = buf;
  Dl_info info;
  if (!pc || !dladdr(pc, &info) || !info.dli_fbase) return raw;
  uintptr_t addr = (uintptr_t)pc - 1;  // inside the call instruction
  const ElfW(Ehdr)* eh = static_cast<const ElfW(Ehdr)*>(info.dli_fbase);
  if (eh->e_type == ET_DYN) addr -= (uintptr_t)info.dli_fbase;
  std::string file = info.dli_fname && strchr(info.dli_fname, '/') ? info.dli_fname : self_exe();
  snprintf(buf, sizeof buf, "%#lx", (unsigned long)addr);
  std::string cmd = "addr2line -i -e '" + file + "' " + buf + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return raw;
  std::string out, line;
  char lb[1024];
  std::vector<std::string> frames;
  while (fgets(lb, sizeof lb, p)) {
    std::string l = lb;
    while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) l.pop_back();
    size_t d = l.find(" (discriminator");
    if (d != std::string::npos) l.resize(d);
    if (l.empty() || l[0] == '?') continue;
    frames.push_back(l);
  }
  pclose(p);
  if (frames.empty()) return raw + " (no line information)";
  for (size_t i = 0; i < frames.size(); i++) {
    const std::string& fr = frames[i];
    size_t colon = fr.rfind(':');
    std::string path = fr.substr(0, colon);
    int ln = colon == std::string::npos ? 0 : atoi(fr.c_str() + colon + 1);
    std::string shown = fr;
    size_t k = shown.rfind("kernels/");
    if (k != std::string::npos) shown = shown.substr(k);
    std::string text;
    std::ifstream src(path);
    for (int j = 1; ln > 0 && std::getline(src, text); j++)
      if (j == ln) break;
    size_t a = text.find_first_not_of(" \t");
    text = a == std::string::npos ? "" : text.substr(a);
    if (!out.empty()) out += ", inlined at ";
    out += shown;
    if (!text.empty()) out += " `" + text + "`";
  }
  return out;
}

// The static __shared__ variable (a TLS symbol of the module) at byte `off` of the TLS segment, with the
// byte's offset in it, from the module's symbol table (readelf), or "" when not found.
std::string tls_symbol(const std::string& module, size_t off) {
  std::string cmd = "readelf -sW --demangle '" + module + "' 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "";
  std::string best;
  char lb[4096];
  while (fgets(lb, sizeof lb, p)) {
    // Num: Value Size Type Bind Vis Ndx Name (Bind may contain spaces: "<OS specific>: 10")
    char val[64];
    unsigned long size;
    if (sscanf(lb, " %*[^:]: %63s %lu", val, &size) < 2) continue;
    const char* tls = strstr(lb, " TLS ");
    if (!tls) continue;
    const char* vis = nullptr;
    for (const char* v : {" DEFAULT ", " HIDDEN ", " PROTECTED ", " INTERNAL "})
      if ((vis = strstr(tls, v))) {
        vis += strlen(v);
        break;
      }
    if (!vis) continue;
    while (*vis == ' ') vis++;
    while (*vis && *vis != ' ') vis++;  // Ndx
    while (*vis == ' ') vis++;
    int pos = (int)(vis - lb);
    size_t v = strtoul(val, nullptr, 16);
    if (off >= v && off < v + size) {
      std::string name = lb + pos;
      while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
      best = name + " + " + std::to_string(off - v);
      break;
    }
  }
  pclose(p);
  return best;
}

std::string thread_name(unsigned linear, dim3 bdim) {
  char buf[96];
  snprintf(buf, sizeof buf, "thread (%u,%u,%u) [warp %u lane %u]", linear % bdim.x, (linear / bdim.x) % bdim.y,
           linear / (bdim.x * bdim.y), linear / 32, linear % 32);
  return buf;
}

std::string describe(const char* kernel, const Hazard& h, uint64_t total, dim3 bdim) {
  char buf[256];
  const bool uninit = !h.pa;
  std::string m = std::string(uninit ? "uninitialized shared memory in " : "race hazard in ") + kernel + ": " +
                  h.kind + (uninit ? " of " : " on ") + h.region;
  snprintf(buf, sizeof buf, " byte offset %zu", h.offset);
  m += buf;
  if (h.module) {
    std::string sym = tls_symbol(*h.module ? std::string(h.module) : self_exe(), h.offset);
    if (!sym.empty()) m += " (" + sym + ")";
  }
  snprintf(buf, sizeof buf, ", block (%u,%u,%u): ", h.bid.x, h.bid.y, h.bid.z);
  m += buf;
  if (uninit) {
    m += thread_name(h.b, bdim) + " at " + where(h.pb) + " reads it, and no thread of the block has written it";
  } else {
    m += thread_name(h.b, bdim) + " at " + where(h.pb) + "; earlier " + thread_name(h.a, bdim) + " at " +
         where(h.pa);
    snprintf(buf, sizeof buf, "; both after __syncthreads #%u with no __syncthreads%s between them", h.bep,
             h.same_warp ? " or warp barrier" : "");
    m += buf;
  }
  if (total > 1)
    m += " (" + std::to_string(total) + (uninit ? " such reads" : " hazards") + " in this launch, the first reported)";
  return m;
}

}  // namespace
}  // namespace sim

// ---------------------------------------------------------------------------------------------------------
// C ABI
extern "C" {

void rlhf_sim_kernels_anchor();  // defined in the kernel unit: links it in with the runtime

int rlhf_sim_kernel_count() {
  rlhf_sim_kernels_anchor();
  return (int)sim::registry().size();
}

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
// check: race checker, -1 = from env (on unless RLHF_SIM_RACECHECK=0), 0 = off, 1 = on.
// workers: OS threads running blocks (0 = env RLHF_SIM_THREADS or the hardware concurrency).
// Returns 0 on success; otherwise writes a message to err.
int rlhf_sim_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                    unsigned smem, void** args, int race_opt, uint64_t seed_opt, int workers_opt, int check_opt,
                    char* err, size_t errlen) {
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
  const char* rc_env = getenv("RLHF_SIM_RACECHECK");
  bool check = check_opt < 0 ? !(rc_env && strcmp(rc_env, "0") == 0) : check_opt > 0;
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
  Hazard hazard, uninit;
  uint64_t nhazards = 0, nuninit = 0;
  OutOfBounds oob;
  uint64_t noob = 0;

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
    // Dynamic shared memory between two guard zones of SMEM_GUARD bytes: the race checker reports an access
    // there (out of bounds of the launch's dynamic shared memory).
    w.smem_store.resize(smem + 2 * SMEM_GUARD);
    std::mt19937_64 rng(seed + 0x51ed270b27u * (uint64_t)(wid + 1));
    BlockCtx b;
    b.bdim = dim3(bx, by, bz);
    b.gdim = dim3(gx, gy, gz);
    b.dyn_smem = smem ? w.smem_store.data() + SMEM_GUARD : nullptr;
    b.dyn_smem_bytes = smem;
    b.warps = w.warps.data();
    b.nthreads = (unsigned)nthreads;
    if (check) {
      w.check = true;
      w.dyn.what = "dynamic shared memory";
      w.dyn.lo = (uintptr_t)w.smem_store.data() + SMEM_GUARD;
      w.dyn.len = smem;
      w.dyn.cells.resize((smem + 1) / 2);
      w.stat.what = "static __shared__ memory, TLS";
      dl_iterate_phdr(find_tls, &w.stat);
      w.stat.cells.resize((w.stat.len + 1) / 2);
    }
    while (!failed) {
      uint64_t k = next.fetch_add(1);
      if (k >= nblocks) break;
      uint64_t id = race ? block_order[k] : k;
      b.bid = {(unsigned)(id % gx), (unsigned)((id / gx) % gy), (unsigned)(id / ((uint64_t)gx * gy))};
      // Dynamic shared memory starts as NaN-ish garbage (0xff bytes) in every block, as on the GPU it
      // holds whatever the previous block left.
      if (smem) memset(b.dyn_smem, 0xff, smem);
      w.gen++;
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
    if (w.noob) {
      std::lock_guard<std::mutex> g(err_mu);
      if (!noob) oob = w.oob;
      noob += w.noob;
    }
    if (w.nhazards || w.nuninit) {
      std::lock_guard<std::mutex> g(err_mu);
      if (!nhazards) hazard = w.hazard;
      nhazards += w.nhazards;
      if (!nuninit) uninit = w.uninit;
      nuninit += w.nuninit;
    }
  };

  if (workers <= 1) {
    work(0);
  } else {
    std::vector<std::thread> ts;
    for (int i = 0; i < workers; i++) ts.emplace_back(work, i);
    for (auto& t : ts) t.join();
  }
  if (failed) return fail(std::string(name) + ": " + first_error);
  if (noob) {
    char buf[160];
    std::string m = std::string("out-of-bounds index in ") + name + ": ";
    if (oob.pc) {
      snprintf(buf, sizeof buf, "dynamic shared memory byte offset %lld (of %zu bytes) at ", oob.index, oob.smem);
      m += buf + where(oob.pc);
    } else {
      snprintf(buf, sizeof buf, "array index %lld out of bounds of %s at ", oob.index, oob.array.c_str());
      m += buf + oob.where;
    }
    snprintf(buf, sizeof buf, ", block (%u,%u,%u): ", oob.bid.x, oob.bid.y, oob.bid.z);
    m += buf + thread_name(oob.thread, dim3(bx, by, bz));
    if (noob > 1) m += " (" + std::to_string(noob) + " in this launch, the first reported)";
    return fail(m);
  }
  // A missing barrier often shows both ways: a read before the write it should wait for, and then the write
  // after that read. The race names both lines: it is reported first.
  if (nhazards) return fail(describe(name, hazard, nhazards, dim3(bx, by, bz)));
  if (nuninit) return fail(describe(name, uninit, nuninit, dim3(bx, by, bz)));
  return 0;
}

}  // extern "C"
