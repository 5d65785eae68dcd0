// kernel_harness.cpp -- runs the REAL CUDA kernels of csrc/cuda/kernels on the CPU through the
// SIMT emulator (simt_runtime.h) and compares every output with a long-double reference.
//
//   python tests/simt/build.py --mode plain|tsan|asan tests/simt/kernel_harness.cpp -- [options]
//
// Options:
//   --list                 print the case names (with their subset tags) and exit
//   --subset all|quick|tsan|asan|mutation   run the cases carrying that tag (default: all)
//   --case-filter SUBSTR   only cases whose name contains SUBSTR (repeatable: any matches)
//   --quick                same as --subset quick
//
// One line per case:
//   CASE <name> fwd[...] bwd[...] kernels=<k1,k2,..> err[y=.. mean=.. rstd=.. dx=.. dw=.. db=..]
//        tol=<t> hash=<16 hex> PASS|FAIL [why]
// `hash` is an FNV-1a hash of the bytes of every output (y, mean, rstd, dx, dweight, dbias): the
// kernels claim results independent of block order, so it must not change with SIMT_SEED.
// Exit status: 0 when every selected case passes, 1 otherwise (the SIMT layer exits 87 on its
// own errors, the sanitizers with their own codes).
//
// Every tensor is its own exact-size heap allocation (ASan sees a one-element overrun); the
// workspace is exactly *_workspace_bytes() bytes.
//
// Build with -DSIMT_HARNESS_F32_ONLY to instantiate only the float kernels (the planted-bug
// builds of test_simt_kernels.py: much faster to compile).
#include "cuda/kernels/launcher.cuh"
#include "cuda/launch_plan.h"

#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness_common.h"
#include "split_harness.h"


template <typename T, typename W, typename O>
static void run_case(const Case& cs) {
  using A = groupnorm_cuda::acc_t<T>;
  const int64_t N = cs.N, C = cs.C, G = cs.G;
  const size_t mis = cs.misalign ? 1 : 0;
  const bool want_dx = cs.mask != PARAMS_ONLY;
  const bool want_dw = cs.mask != DX_ONLY && cs.hasw;
  const bool want_db = cs.mask != DX_ONLY && cs.hasb;

  CaseData<T, W, O> d(cs, mis);
  const size_t numel = d.numel;
  Buf<O> y(numel, mis);
  Buf<T> dx(want_dx ? numel : 0, want_dx ? mis : 0);
  Buf<W> dw(want_dw ? C : 0), db(want_db ? C : 0);
  Buf<A> mean(N * G), rstd(N * G);

  // ---------------------------------------------------------------- plan + launch (the real API)
  const P::DeviceProblem pb = device_problem<T>(cs, cs.HxW);
  simt::set_device_max_cluster(cs.device_cluster);
  K::ForwardArgs<T, W, O> fa{d.x.p, d.w.p, d.b.p, y.p, mean.p, rstd.p, 1e-5};
  const P::ForwardPlan fp0 = P::plan_forward(pb, cs.ov);
  const P::ForwardPlan fp = K::fit_forward_plan(fa, fp0);
  std::string why;
  if (cs.misalign) {
    if (fp0.vec == 1) why += " misaligned-case-needs-a-vector-plan";
    bool threw = false;
    try {
      Buf<unsigned char> dummy(1);
      K::launch_forward(fa, fp0, dummy.p, nullptr);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    if (!threw) why += " launch_forward-accepted-a-vector-plan-for-misaligned-tensors";
  }
  Buf<unsigned char> fws(K::forward_workspace_bytes(fp));
  const auto t0 = std::chrono::steady_clock::now();
  simt::launch_log().clear();
  K::launch_forward(fa, fp, fws.p, nullptr);

  K::BackwardArgs<T, W, O> ba{d.dy.p, d.x.p, mean.p, rstd.p, d.w.p, d.b.p, dx.p, dw.p, db.p};
  const P::BackwardPlan bp = K::fit_backward_plan(ba, P::plan_backward(pb, cs.ov));
  Buf<unsigned char> bws(K::backward_workspace_bytes(bp));
  K::launch_backward(ba, bp, bws.p, nullptr);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  // ---------------------------------------------------------------- which kernels ran
  // The plans' launch lists, less the launches of unwanted outputs.
  std::vector<std::pair<const P::Launch*, int64_t>> planned;  // launch, vector width of its plan
  for (const auto& l : fp.launches) planned.push_back({&l, fp.vec});
  for (const auto& l : bp.launches) {
    if (l.id == P::Kernel::BwdParams && !want_dw && !want_db) continue;
    if ((l.id == P::Kernel::BwdDx || l.id == P::Kernel::BwdDxRows) && !want_dx) continue;
    planned.push_back({&l, bp.vec});
  }
  std::vector<std::string> kern;
  check_launch_log<T, W, O>(planned, 0, why, kern);

  // ---------------------------------------------------------------- reference (long double)
  const Errors er = reference_errors<T, W, O>(d, y.p, mean.p, rstd.p, want_dx ? dx.p : nullptr, want_dw ? dw.p : nullptr,
                                           want_db ? db.p : nullptr);
  judge<T, W, O>(er, why);
  const double ry = er.y, rx = er.dx, rw = er.dw, rb = er.db, tT = tol_of<T>();

  // ---------------------------------------------------------------- plan expectations (coverage)
  const Expect& e = cs.ex;
  const bool rows = fp.schedule == P::Schedule::Rows, bun = fp.schedule == P::Schedule::Bundle;
  if (e.fwd_sched >= 0 && static_cast<int>(fp.schedule) != e.fwd_sched) why += " plan:fwd-schedule";
  if (e.bwd_sched >= 0 && static_cast<int>(bp.schedule) != e.bwd_sched) why += " plan:bwd-schedule";
  if (e.vec == 1 && (fp.vec != 1 || bp.vec != 1)) why += " plan:not-scalar";
  if (e.vec == 2 && (fp.vec == 1 || bp.vec == 1)) why += " plan:not-vectorized";
  if (e.gpb_gt1 && fp.walk.gpb <= 1) why += " plan:gpb";
  if (e.splits_gt1 && !bun && (fp.walk.splits <= 1 || bp.schedule != P::Schedule::Split || bp.walk.splits <= 1))
    why += " plan:splits";
  if (e.pieces_gt1 && (bp.schedule != P::Schedule::Split || bp.sums.pieces <= 1)) why += " plan:pieces";
  if ((bun ? fp.bundle.block : fp.walk.block()) < e.min_block) why += " plan:block";
  if (e.cluster && (fp.launches.empty() || fp.launches[0].cluster != e.cluster || bp.launches.empty() ||
                    bp.launches[0].cluster != e.cluster))
    why += " plan:cluster";
  if (e.splits_gt1 && bun && fp.bundle.cluster <= 1) why += " plan:bundle-cluster";
  if (e.samples && (bp.schedule != P::Schedule::OnChip || bp.samples_per_block != e.samples)) why += " plan:samples";

  Fnv h;
  h.add(y.p, numel * sizeof(O));
  h.add(mean.p, N * G * sizeof(A));
  h.add(rstd.p, N * G * sizeof(A));
  if (want_dx) h.add(dx.p, numel * sizeof(T));
  if (want_dw) h.add(dw.p, C * sizeof(W));
  if (want_db) h.add(db.p, C * sizeof(W));

  std::string ks;
  for (const auto& k : kern) ks += (ks.empty() ? "" : ",") + k;
  const bool ok = why.empty();
  // fwd[splits=] prints the Rows schedule's pieces per sample, the Bundle schedule's cluster size
  if (!ok) ++g_failures;
  std::printf(
      "CASE %-34s fwd[%s vec=%lld splits=%lld tpg=%lld gpb=%lld grid=%lld block=%lld] "
      "bwd[%s %s vec=%lld pieces=%lld sums_grid=%lld sums_block=%lld dx_splits=%lld dx_grid=%lld nb=%lld] kernels=%s "
      "err[y=%.2e mean=%.2e rstd=%.2e dx=%.2e dw=%.2e db=%.2e] tol=%.1e hash=%016llx ms=%.0f %s%s\n",
      cs.name.c_str(), sched_name(fp.schedule), (long long)fp.vec,
      (long long)(rows ? fp.rows.pieces : bun ? fp.bundle.cluster : fp.walk.splits), (long long)fp.walk.tpg,
      (long long)fp.walk.gpb, (long long)(rows ? fp.rows.grid : bun ? fp.bundle.grid : fp.walk.grid),
      (long long)(rows ? fp.rows.block : bun ? fp.bundle.block : fp.walk.block()),
      sched_name(bp.schedule), cs.cl ? "nhwc" : "nchw", (long long)bp.vec, (long long)bp.sums.pieces, (long long)bp.sums.grid,
      (long long)bp.sums.block, (long long)bp.walk.splits, (long long)bp.walk.grid, (long long)bp.samples_per_block, ks.c_str(), ry,
      er.mean, er.rstd, rx, rw, rb, tT, (unsigned long long)h.h, ms, ok ? "PASS" : "FAIL", why.c_str());
  std::fflush(stdout);
}

// The fused ops, or the split ops over the case's shards.
template <typename T, typename W> static void run(const Case& cs) {
  if (cs.shards.empty()) run_case<T, W, T>(cs);
  else run_split_case<T, W>(cs);
}

static void dispatch(const Case& cs) {
  switch (cs.dt) {
    case DT::F32: return run<float, float>(cs);
#if !defined(SIMT_HARNESS_F32_ONLY)
    case DT::F64: return run<double, double>(cs);
    // y in float (autocast's output, the fused ops only): W = float, as the CUDA glue passes it
    case DT::F16:
      if (cs.ofloat) return run_case<__half, float, float>(cs);
      return cs.wfloat ? run<__half, float>(cs) : run<__half, __half>(cs);
    case DT::BF16:
      if (cs.ofloat) return run_case<__nv_bfloat16, float, float>(cs);
      return cs.wfloat ? run<__nv_bfloat16, float>(cs) : run<__nv_bfloat16, __nv_bfloat16>(cs);
#else
    default:
      std::printf("CASE %-34s SKIP (built with SIMT_HARNESS_F32_ONLY)\n", cs.name.c_str());
      return;
#endif
  }
}

// ------------------------------------------------------------------------------ the case table
#include "kernel_cases.h"  // make_cases()

int main(int argc, char** argv) {
  std::string subset = "all";
  std::vector<std::string> filters;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--list") list = true;
    else if (a == "--quick") subset = "quick";
    else if (a == "--subset" && i + 1 < argc) subset = argv[++i];
    else if (a == "--case-filter" && i + 1 < argc) filters.push_back(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--list] [--subset all|quick|tsan|asan|mutation] [--quick] "
                           "[--case-filter SUBSTR]...\n", argv[0]);
      return 2;
    }
  }
  unsigned need = 0;
  if (subset == "quick") need = T_QUICK;
  else if (subset == "tsan") need = T_TSAN;
  else if (subset == "asan") need = T_ASAN;
  else if (subset == "mutation") need = T_MUT;
  else if (subset != "all") {
    std::fprintf(stderr, "unknown subset %s\n", subset.c_str());
    return 2;
  }
  const std::vector<Case> cases = make_cases();
  std::set<std::string> names;
  int ran = 0;
  for (const Case& c : cases) {
    if (!names.insert(c.name).second) {
      std::fprintf(stderr, "duplicate case name %s\n", c.name.c_str());
      return 2;
    }
    if (need && !(c.tags & need)) continue;
    if (!filters.empty()) {
      bool m = false;
      for (const auto& f : filters) m = m || c.name.find(f) != std::string::npos;
      if (!m) continue;
    }
    if (list) {
      std::printf("%s%s%s%s%s\n", c.name.c_str(), c.tags & T_QUICK ? " quick" : "", c.tags & T_TSAN ? " tsan" : "",
                  c.tags & T_ASAN ? " asan" : "", c.tags & T_MUT ? " mutation" : "");
      continue;
    }
    dispatch(c);
    ++ran;
  }
  if (list) return 0;
  std::printf("SUMMARY %d cases, %d failures\n", ran, g_failures);
  return g_failures ? 1 : 0;
}
