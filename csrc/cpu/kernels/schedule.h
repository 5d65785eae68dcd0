// Work decomposition of the CPU kernels (the CPU counterpart of cuda/launch_plan.h).
//
// A "unit" is the data one set of statistics needs whole:
//   NCHW  (contiguous):    unit = one group (n, g): M = D * HxW contiguous elements;
//   NHWC  (channels last): unit = one sample n: HxW rows of C contiguous channels, holding
//                          all G groups of that sample.
// A unit is cut into fixed-size "pieces" (kPieceElems elements, whole rows for NHWC;
// kRowPieceElems in the NHWC forward, whose threads walk four pieces at a time). Partial
// results of pieces are always merged in piece order, whichever thread computed them, so the
// result does not depend on the schedule or the thread count (bitwise deterministic).
// Schedules:
//   fused: units in parallel; one task computes a unit's statistics and then normalizes it
//          (backward: reduces and then writes dx) while the unit is still in L2: the forward
//          moves ~1 read + 1 write of DRAM, the backward ~3 accesses;
//   split: units one after another (so a unit's second pass finds it in L3), pieces of the
//          unit in parallel. Used for units too big for L2 or too few to feed the threads,
//          unless the units divide evenly among the threads and one per thread fits in L3.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "cpu/kernels/machine.h"

namespace groupnorm_cuda {
namespace cpu {
namespace {  // internal linkage: cpu/kernels/ belongs to the one CPU translation unit

// Fixed, the same on every machine: they decide which values are summed together, and so the
// output bits (the same bits on every machine and thread count).
constexpr int64_t kPieceElems = 16384;         // elements per piece (a multiple of every vector width)
constexpr int64_t kRowPieceElems = 65536;      // NHWC forward: elements per piece (whole rows)
constexpr int64_t kMaxWelfordRows = 4096;       // NHWC forward: rows per piece from kRowPieceElems, at most
constexpr int kStreams = 4;                     // NHWC forward: pieces one thread walks together
constexpr int64_t kStatBlockRows = 16;          // NHWC reductions: rows summed per block (block_moments)

// From the caches this machine reports (machine.h), read once per process; they change where
// data waits between passes and what is prefetched, never a result bit (csrc/README.md, "CPU
// tuning"). In brackets: the value on the machines measured (2-core VMs: Intel, L2 2 MiB / core,
// L3 480 MiB, L1d taken as 48 KiB; AMD EPYC, L1d 32 KiB, L2 1 MiB / core, L3 32 MiB).
// A unit this small stays in a core's L2 with its output streaming past [512 KiB / 256 KiB].
inline int64_t fused_unit_bytes() { return machine().l2 / 4; }
// Units in flight at once (one per thread) that stay in the last-level cache [360 / 24 MiB].
inline int64_t fused_llc_bytes() { return machine().llc / 4 * 3; }
// SiLU backward: a unit's dy' kept (per-thread scratch) for the dx pass [1 MiB / 512 KiB].
inline int64_t keep_grad_bytes() { return machine().l2 / 2; }
// NHWC statistics: whether they prefetch each block of rows one block ahead (block_moments).
// Yes when the input is larger than the last-level cache [480 / 32 MiB] (it comes from DRAM),
// or when a row is shorter than kShortRowBytes: a vector of channels walks one line of each of
// a block's 16 rows, and a row of fewer lines than a 4 KiB page holds is too short a stream
// for the hardware prefetchers to ramp up on, so a block from DRAM arrives late. Rows of a
// page or more go without: there the prefetch instructions cost 45% in cache and gained 5%
// from DRAM. Measured, stats op, 2 threads, Zen 5, cold (inputs rotated over 80 MB) / hot,
// prefetch vs none, two runs each: 4x128x64x64 bf16 (256 B rows) cold 0.12 / 0.12 vs 0.28 /
// 0.31 ms, hot 0.10 / 0.10 vs 0.08 / 0.08; 2x320x64x64 bf16 (640 B) cold 0.17 / 0.15 vs 0.37
// / 0.47, hot 0.13 / 0.13 vs 0.10 / 0.11; 2x320x64x64 fp32 (1280 B) cold 0.29 / 0.22 vs 0.40
// / 0.37, hot 0.16 / 0.15 vs 0.13 / 0.12; 2x1280x32x32 fp32 (5 KiB) cold 0.29 / 0.30 vs 0.31
// / 0.32, hot 0.18 / 0.19 vs 0.12 / 0.13.
constexpr int64_t kShortRowBytes = 4096;
inline bool stats_prefetch(int64_t row_bytes, int64_t input_bytes) {
  return row_bytes < kShortRowBytes || input_bytes > machine().llc;
}
// NCHW fused: whether the second pass of a unit of unit_bytes prefetches the same range of the
// next unit, so that the next statistics pass finds it in cache: on Intel CPUs, for units of
// at most two L1d [96 KiB]; never on others. Measured, fp32, G = 32, 2 threads, interleaved
// calls: on an Intel VM (L2 2 MiB / core) the forward of 32x2048x7x7 (12 KiB units) 1.58 ->
// 1.31 ms, 32x1024x14x14 3.15 -> 2.63 ms, 8x512x32x32 1.85 -> 1.55 ms, the backward 4-7%
// faster; on an AMD EPYC Zen 4 VM (L2 1 MiB / core), where the hardware prefetchers already
// keep up with the unit-after-unit walk, the prefetch instructions made the same forwards and
// backwards 4-15% slower (geomean over 7 shapes, hot and cold, benchmarks/RESULTS.md).
inline bool next_unit_prefetch(int64_t unit_bytes) { return machine().intel && unit_bytes <= machine().l1d * 2; }
// NHWC row walks (the forward's normalization, the backward's sums): whether each row is
// prefetched kPrefetchBytes ahead (prefetch_ahead), on Intel CPUs only. On the Intel VM a
// row-by-row reduction read ~30% slower than a plain read without it, and the normalization
// of a sample not in L2 ~6% slower; on the AMD Zen 4 VM the same rows went 0-20% faster
// without it (channels-last fp32, 2 threads, 5 shapes of 1-16 MiB, in cache and from DRAM:
// 19 of 20 forward / backward comparisons, in-process interleaved, benchmarks/RESULTS.md).
// (The statistics' block prefetch, stats_prefetch, measured neutral on that Zen 4 and a gain
// from DRAM on Zen 5: it stays.)
inline bool row_prefetch() { return machine().intel; }

// Fewer bytes than this per thread are not worth waking a thread for: a parallel region costs
// a few microseconds, the work of a small call less (ATen's GRAIN_SIZE of 32768 elements is the
// same idea). Only decides which thread runs a unit, never a result bit.
constexpr int64_t kParallelGrainBytes = 128 << 10;

struct Schedule {
  int64_t units = 0;
  int64_t pieces_per_unit = 0;
  bool fused = false;
  int64_t grain = 1;  // fused: units per parallel chunk at least (all of them: one thread, no region)
};

inline Schedule make_schedule(int64_t units, int64_t pieces_per_unit, int64_t unit_bytes) {
  Schedule s;
  s.units = units;
  s.pieces_per_unit = pieces_per_unit;
  const int64_t threads = at::get_num_threads();
  // Fused when a unit stays cache-resident and there are enough units to keep every thread
  // busy, or when a unit is a single piece (nothing to split).
  // Also fused when the units divide evenly among the threads and one unit per thread still
  // fits the shared L3: the second pass then re-reads from L3 as in the split schedule, but
  // without two barriers and a serial finish per unit (which cost most when a thread is
  // descheduled on a busy machine, or stalls on a page fault of a fresh output).
  // Splitting such a unit so that each thread's share stays in its own L2 does not pay: the
  // second pass's output (or dx) evicts the share as it goes. Measured, 2 threads, 2 MiB L2,
  // fp32 channels-last with 3.2 MiB samples, interleaved in one process: forward fused 5-7%
  // faster from DRAM, 5% slower when the same input stays in L3; 30% faster with huge pages
  // (THP_MEM_ALLOC_ENABLE=1); backward 10-20% faster.
  s.fused = pieces_per_unit <= 1 || (unit_bytes <= fused_unit_bytes() && units >= 2 * threads) ||
            (units % threads == 0 && unit_bytes * threads <= fused_llc_bytes());
  s.grain = std::max<int64_t>(1, kParallelGrainBytes / std::max<int64_t>(unit_bytes, 1));
  return s;
}

// Runs `stats(unit, p0, p1)` over ranges of pieces that cover every piece of a unit, then
// `finish(unit)` once all of them are done, then `apply(unit, p0, p1)` likewise, with the
// schedule above: fused, one call of each per unit covering all its pieces; split, one range
// per thread. The callbacks must merge piece results in piece order (they receive the piece
// indices), which makes the result independent of the schedule and the thread count.
template <typename Stats, typename Finish, typename Apply>
void run_schedule_ranges(const Schedule& s, const Stats& stats, const Finish& finish, const Apply& apply) {
  if (s.units == 0) return;
  const int64_t pieces = s.pieces_per_unit;
  if (s.fused) {
    at::parallel_for(0, s.units, s.grain, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        stats(u, int64_t{0}, pieces);
        finish(u);
        apply(u, int64_t{0}, pieces);
      }
    });
    return;
  }
  for (int64_t u = 0; u < s.units; ++u) {
    at::parallel_for(0, pieces, 1, [&](int64_t begin, int64_t end) { stats(u, begin, end); });
    finish(u);
    at::parallel_for(0, pieces, 1, [&](int64_t begin, int64_t end) { apply(u, begin, end); });
  }
}

// The same with `stats(unit, piece)` and `apply(unit, piece)` called for one piece at a time,
// in piece order within a range.
template <typename Stats, typename Finish, typename Apply>
void run_schedule(const Schedule& s, const Stats& stats, const Finish& finish, const Apply& apply) {
  run_schedule_ranges(
      s, [&](int64_t u, int64_t p0, int64_t p1) { for (int64_t p = p0; p < p1; ++p) stats(u, p); }, finish,
      [&](int64_t u, int64_t p0, int64_t p1) { for (int64_t p = p0; p < p1; ++p) apply(u, p); });
}

// Pieces [p0, p1) of a unit as kStreams far-apart streams of memory per thread: the pieces
// below `full` (those with the whole rows_per_piece rows) go in groups of kStreams, piece
// p0 + i with p0 + i + q, p0 + i + 2q, ... (q = a quarter of them), passed to
// group(const int64_t* ps); the rest go one at a time to one(p). Why: with one stream per
// thread, memory wait and arithmetic added up in the NHWC forward's passes (its statistics
// pass took 2.1 ms on a 33.5 MB bf16 sample that a plain read covers in 1.6 ms); with four
// streams at once, each prefetched a row ahead, they overlap. Measured, 2 threads, 2-core
// AVX-512 VM, variants switched call by call in one process: statistics pass 2.06 -> 1.67 ms
// (2 streams: 1.76, 8: no better than 4); whole forward 1x128x8x128x128 bf16 channels-last
// 10.29 -> 9.54 ms, 32x256x56x56 fp32 channels-last 26.8 -> 24.7 ms. A plain-C++ read of
// 32 MiB behaves alike here (1 stream 1.24 ms, 4 streams with prefetch 1.11 ms; with
// Welford arithmetic 1.7-2.0 vs 1.1 ms). Used now by the NHWC forward's normalization pass;
// the statistics walk 16 rows of one piece at once (block_moments), which gives them the
// same parallelism within a piece.
template <typename Group, typename One>
void piece_streams(int64_t p0, int64_t p1, int64_t full, const Group& group, const One& one) {
  const int64_t q = std::max<int64_t>(0, std::min(p1, full) - p0) / kStreams;
  int64_t ps[kStreams];
  for (int64_t i = 0; i < q; ++i) {
    for (int k = 0; k < kStreams; ++k) ps[k] = p0 + i + k * q;
    group(static_cast<const int64_t*>(ps));
  }
  for (int64_t p = p0 + kStreams * q; p < p1; ++p) one(p);
}

}  // namespace
}  // namespace cpu
}  // namespace groupnorm_cuda
