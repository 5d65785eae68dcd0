// Part of simt_runtime.h: the thread pool that runs a block (or a cluster) of CUDA threads.
// Include simt_runtime.h, not this file: the parts rely on its includes, CUDA keywords and
// built-in variables, and on each other's order.
#pragma once

namespace simt {
namespace detail {

// ------------------------------------------------------------------------------ thread pool
struct Body {  // type-erased kernel call (a plain function pointer keeps sanitizer stacks short)
  void (*fn)(const void*);
  const void* arg;
};

class Pool {
 public:
  static Pool& get() {
    static Pool p;
    return p;
  }
  ~Pool() {
    for (auto& w : workers_) {
      {
        std::lock_guard<std::mutex> lk(w->m);
        w->stop = true;
      }
      w->cv.notify_one();
    }
    for (auto& w : workers_) w->thread.join();
  }

  // Runs body on nthreads pool threads for block blk; returns when all have exited.
  void run_block(Block* blk, int nthreads, const Body* body, const dim3& bdim, const dim3& gdim,
                 double timeout_s) {
    run_blocks(&blk, 1, nthreads, body, bdim, gdim, timeout_s);
  }
  // The same for nblocks blocks at once (the CTAs of a cluster), nthreads each.
  void run_blocks(Block* const* blks, int nblocks, int per_block, const Body* body, const dim3& bdim,
                  const dim3& gdim, double timeout_s) {
    const int nthreads = nblocks * per_block;
    Block* blk = blks[0];
    while (int(workers_.size()) < nthreads) {
      workers_.emplace_back(new Worker);
      Worker* w = workers_.back().get();
      const int i = int(workers_.size()) - 1;
      w->thread = std::thread([this, w, i] { worker(w, i); });
    }
    {
      std::lock_guard<std::mutex> lk(done_m_);
      done_ = 0;
      n_ = nthreads;
    }
    // Each worker has its own start mutex: a thread that finishes its part of the block and goes
    // back to waiting must not happen-before a thread that has not started yet (that would hide
    // races from TSan), so no lock is shared between workers outside the barrier/warp objects.
    for (int i = 0; i < nthreads; ++i) {
      Worker& w = *workers_[size_t(i)];
      {
        std::lock_guard<std::mutex> lk(w.m);
        w.job = Job{blks[i / per_block], body, bdim, gdim, i % per_block};
        w.has_job = true;
      }
      w.cv.notify_one();
    }
    std::unique_lock<std::mutex> lk(done_m_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (done_ != nthreads) {
      if (done_cv_.wait_until(lk, deadline) == std::cv_status::timeout && done_ != nthreads) {
        lk.unlock();
        tctx.block = blk;  // so the report dumps this block's thread states
        tctx.tid = -1;
        fail_dump("TIMEOUT: block (%u,%u,%u) did not finish within %.1f s (SIMT_TIMEOUT): a hang (spin-wait on "
                  "another thread/block, infinite loop) or a deadlock the layer cannot see",
                  blk->idx.x, blk->idx.y, blk->idx.z, timeout_s);
      }
    }
  }

 private:
  struct Job {
    Block* blk = nullptr;
    const Body* body = nullptr;
    dim3 bdim, gdim;
    int tid = 0;  // linear thread index within blk
  };
  struct Worker {
    std::thread thread;
    std::mutex m;
    std::condition_variable cv;
    bool has_job = false;
    bool stop = false;
    Job job;
  };

  void worker(Worker* w, int i) {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lk(w->m);
        w->cv.wait(lk, [&] { return w->stop || w->has_job; });
        if (w->stop) return;
        job = w->job;
        w->has_job = false;
      }
      Block* blk = job.blk;
      const dim3 bdim = job.bdim;
      const unsigned t = unsigned(job.tid);
      threadIdx = make_uint3(t % bdim.x, (t / bdim.x) % bdim.y, t / (bdim.x * bdim.y));
      blockIdx = make_uint3(blk->idx.x, blk->idx.y, blk->idx.z);
      blockDim = bdim;
      gridDim = job.gdim;
      tctx.block = blk;
      tctx.tid = job.tid;
      set_state(*blk, job.tid, kRunning);
      job.body->fn(job.body->arg);
      thread_exit();
      tctx.block = nullptr;
      tctx.tid = -1;
      {
        std::lock_guard<std::mutex> lk(done_m_);
        if (++done_ == n_) done_cv_.notify_one();
      }
    }
  }

  std::vector<std::unique_ptr<Worker>> workers_;
  std::mutex done_m_;
  std::condition_variable done_cv_;
  int done_ = 0;
  int n_ = 0;
};

struct SmemDeleter {
  void operator()(unsigned char* p) const { ::operator delete[](p, std::align_val_t(16)); }
};

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

inline void run_grid(dim3 grid, dim3 block, size_t smem_bytes, Body body, unsigned cluster_x = 1) {
  if (tctx.block) fail("simt::launch called from inside a kernel (dynamic parallelism is not supported)");
  const uint64_t nt = uint64_t(block.x) * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0)
    fail("invalid launch configuration: grid (%u,%u,%u) block (%u,%u,%u) has a zero dimension "
         "(cudaErrorInvalidConfiguration)", grid.x, grid.y, grid.z, block.x, block.y, block.z);
  if (block.x > 1024 || block.y > 1024 || block.z > 64 || nt > 1024)
    fail("invalid launch configuration: block (%u,%u,%u) = %llu threads; limits are x,y <= 1024, z <= 64, "
         "x*y*z <= 1024 (cudaErrorInvalidConfiguration)", block.x, block.y, block.z, (unsigned long long)nt);
  if (grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u)
    fail("invalid launch configuration: grid (%u,%u,%u) exceeds limits x <= 2^31-1, y,z <= 65535",
         grid.x, grid.y, grid.z);
  if (smem_bytes > 232448)
    fail("invalid launch configuration: %zu bytes of dynamic shared memory > 227 KiB (sm_90 opt-in maximum)",
         smem_bytes);
  if (cluster_x == 0 || cluster_x > 16 || grid.x % cluster_x != 0)
    fail("invalid cluster launch: cluster size %u (1-16, 8 portable) must divide grid.x = %u", cluster_x, grid.x);
  const uint64_t nblocks = uint64_t(grid.x) * grid.y * grid.z;
  const double max_blocks = env_double("SIMT_MAX_BLOCKS", 1 << 20);
  if (double(nblocks) > max_blocks)
    fail("grid (%u,%u,%u) = %llu blocks is too large to emulate (SIMT_MAX_BLOCKS=%.0f)", grid.x, grid.y, grid.z,
         (unsigned long long)nblocks, max_blocks);

  std::lock_guard<std::mutex> launch_lock(launch_mutex());  // one launch at a time (one device, one stream)
  static uint64_t launch_counter = 0;
  const uint64_t seed = base_seed() + 0x9E3779B97F4A7C15ull * (++launch_counter);
  // Clusters (cluster_x consecutive blocks along x, all resident at once) in a random order.
  const uint64_t nclusters = nblocks / cluster_x;
  std::vector<uint64_t> order(nclusters);
  for (uint64_t i = 0; i < nclusters; ++i) order[i] = i;
  const char* ord = std::getenv("SIMT_BLOCK_ORDER");
  if (!(ord && std::strcmp(ord, "linear") == 0)) {
    std::mt19937_64 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
  }
  const double timeout_s = env_double("SIMT_TIMEOUT", 120.0);
  const int n = int(nt);
  const int nwarps = (n + 31) / 32;
  for (uint64_t ci : order) {
    std::vector<std::unique_ptr<Block>> blks(cluster_x);
    std::vector<std::unique_ptr<unsigned char, SmemDeleter>> smems(cluster_x);
    Cluster cl;
    cl.live = n * int(cluster_x);
    for (unsigned r = 0; r < cluster_x; ++r) {
      const uint64_t lin = ci * cluster_x + r;
      blks[r].reset(new Block);
      Block& blk = *blks[r];
      blk.idx = dim3(unsigned(lin % grid.x), unsigned((lin / grid.x) % grid.y), unsigned(lin / (uint64_t(grid.x) * grid.y)));
      blk.nthreads = n;
      blk.live = n;
      blk.warps.reset(new Warp[nwarps]);
      for (int w = 0; w < nwarps; ++w) {
        const int lanes = std::min(32, n - 32 * w);
        blk.warps[w].existing = lanes == 32 ? 0xFFFFFFFFu : ((1u << lanes) - 1u);
      }
      blk.info.reset(new ThreadInfo[n]);
      // Dynamic shared memory: exactly smem_bytes (so ASan sees the bounds), fresh per block,
      // poisoned with 0xFF bytes (NaN for float/double, -1 for integers).
      smems[r].reset(static_cast<unsigned char*>(::operator new[](smem_bytes, std::align_val_t(16))));
      if (smem_bytes) std::memset(smems[r].get(), 0xFF, smem_bytes);
      blk.smem = smems[r].get();
      blk.smem_bytes = smem_bytes;
      if (cluster_x > 1) {
        blk.cluster = &cl;
        blk.cluster_rank = r;
        cl.blocks.push_back(&blk);
      }
    }
    std::vector<Block*> ptrs;
    for (auto& b : blks) ptrs.push_back(b.get());
    Pool::get().run_blocks(ptrs.data(), int(cluster_x), n, &body, block, grid, timeout_s);
  }
}

template <typename To, typename From>
To implicit_convert(From&& f) {
  return std::forward<From>(f);  // copy-initialization: only implicit conversions, like a kernel call
}

}  // namespace detail
}  // namespace simt
