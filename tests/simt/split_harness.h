// The split ops (csrc/ops.cpp: stats, apply, backward_sums, backward_dx) through the real
// launcher and planner (plan_forward_part / plan_backward_part), as groupnorm_cuda/distributed.py
// runs them over a tensor sharded along its spatial positions: every shard's moments, merged
// here in shard order (Chan's formula in float64, written independently of the kernels), every
// shard normalized with the merged statistics, every shard's backward sums added in shard order
// in float64, every shard's dx from the totals. The assembled outputs are compared with the
// long-double reference of the whole (unsharded) op, as the fused cases are; mean and rstd must
// be the same bits on every shard. Not a standalone header (included by kernel_harness.cpp).
#pragma once

#include <deque>
#include <string>
#include <vector>

// One shard: spatial positions [s0, s0 + hw) of the case's tensor, in the case's layout.
template <typename T> struct Shard {
  using A = acc_t<T>;
  int64_t s0, hw;
  Buf<T> x, dy, y, dx;
  Buf<A> mean, rstd, gsum, dwp, dbp;
  Buf<double> mom;
  template <typename W>
  Shard(const CaseData<T, W, T>& d, int64_t s0_, int64_t hw_)
      : s0(s0_), hw(hw_), x(d.N * d.C * hw_), dy(d.N * d.C * hw_), y(d.N * d.C * hw_), dx(d.N * d.C * hw_),
        mean(d.N * d.G), rstd(d.N * d.G), gsum(2 * d.N * d.G), dwp(d.cs.hasw ? d.C : 0), dbp(d.cs.hasb ? d.C : 0),
        mom(4 * d.N * d.G) {
    for (int64_t n = 0; n < d.N; ++n)
      for (int64_t c = 0; c < d.C; ++c)
        for (int64_t s = 0; s < hw; ++s) {
          x.p[d.at(n, c, s, hw)] = d.x.p[d.idx(n, c, s0 + s)];
          dy.p[d.at(n, c, s, hw)] = d.dy.p[d.idx(n, c, s0 + s)];
        }
  }
};

// Chan's merge of the shards' (count, shift, mean of x - shift, M2) rows in shard order, about
// the first non-empty shard's shift (the contract of merge_moments).
static void merge_in_order(const std::vector<const double*>& parts, int64_t NG, double* out) {
  for (int64_t u = 0; u < NG; ++u) {
    double n = 0, shift = 0, mean = 0, m2 = 0;
    for (const double* q : parts) {
      const double nb = q[4 * u];
      if (nb == 0) continue;
      if (n == 0) {
        n = nb, shift = q[4 * u + 1], mean = q[4 * u + 2], m2 = q[4 * u + 3];
        continue;
      }
      const double delta = (q[4 * u + 1] - shift) + q[4 * u + 2] - mean, tot = n + nb, f = nb / tot;
      mean += delta * f;
      m2 += q[4 * u + 3] + delta * delta * n * f;
      n = tot;
    }
    out[4 * u] = n, out[4 * u + 1] = shift, out[4 * u + 2] = mean, out[4 * u + 3] = m2;
  }
}

template <typename T, typename W>
static void run_split_case(const Case& cs) {
  using A = acc_t<T>;
  const int64_t N = cs.N, C = cs.C, G = cs.G, NG = N * G;
  CaseData<T, W, T> d(cs, 0);
  std::deque<Shard<T>> sh;
  int64_t s0 = 0;
  for (int64_t hw : cs.shards) {
    sh.emplace_back(d, s0, hw);
    s0 += hw;
  }
  std::string why;
  if (s0 != cs.HxW) why += " case:shards-do-not-sum-to-HxW";
  simt::set_device_max_cluster(cs.device_cluster);
  simt::launch_log().clear();
  std::vector<std::string> kern;
  P::ForwardPlan fp_show;  // the largest shard's plans, printed
  P::BackwardPlan bp_show;
  const Shard<T>* show = &sh[0];
  for (const Shard<T>& s : sh)
    if (s.hw > show->hw) show = &s;
  // Runs one part on a shard: the plan (refitted), its workspace, the launches, the log check.
  auto run_fwd = [&](const K::ForwardArgs<T, W, T>& a, const Shard<T>& s, P::Part part) {
    const P::ForwardPlan fp = K::fit_forward_plan(a, P::plan_forward_part(device_problem<T>(cs, s.hw), part, cs.ov));
    Buf<unsigned char> ws(K::forward_workspace_bytes(fp));
    const size_t from = simt::launch_log().size();
    K::launch_forward(a, fp, ws.p, nullptr);
    std::vector<std::pair<const P::Launch*, int64_t>> planned;
    for (const auto& l : fp.launches) planned.push_back({&l, fp.vec});
    check_launch_log<T, W, T>(planned, from, why, kern);
    if (part == P::Part::Apply && &s == show) fp_show = fp;
  };
  auto run_bwd = [&](const K::BackwardArgs<T, W, T>& a, const Shard<T>& s, P::Part part) {
    const P::BackwardPlan bp = K::fit_backward_plan(a, P::plan_backward_part(device_problem<T>(cs, s.hw), part, cs.ov));
    Buf<unsigned char> ws(K::backward_workspace_bytes(bp));
    const size_t from = simt::launch_log().size();
    K::launch_backward(a, bp, ws.p, nullptr);
    std::vector<std::pair<const P::Launch*, int64_t>> planned;
    for (const auto& l : bp.launches)
      if (l.id != P::Kernel::BwdParams || cs.hasw || cs.hasb) planned.push_back({&l, bp.vec});
    check_launch_log<T, W, T>(planned, from, why, kern);
    if (part == P::Part::Dx && &s == show) bp_show = bp;
  };
  const auto t0 = std::chrono::steady_clock::now();

  // forward: stats per shard (an empty shard: count 0, no launch, as the ATen glue), merge, apply
  std::vector<const double*> parts;
  for (Shard<T>& s : sh) {
    if (s.hw > 0) {
      K::ForwardArgs<T, W, T> a{s.x.p, nullptr, nullptr, nullptr, nullptr, nullptr, 0.0};
      a.moments_out = s.mom.p;
      run_fwd(a, s, P::Part::Stats);
    }
    parts.push_back(s.mom.p);
  }
  Buf<double> merged(4 * NG);
  merge_in_order(parts, NG, merged.p);
  for (Shard<T>& s : sh) {
    K::ForwardArgs<T, W, T> a{s.x.p, d.w.p, d.b.p, s.y.p, s.mean.p, s.rstd.p, 1e-5};
    a.moments_in = merged.p;
    run_fwd(a, s, P::Part::Apply);
  }
  for (const Shard<T>& s : sh)
    if (std::memcmp(s.mean.p, sh[0].mean.p, NG * sizeof(A)) || std::memcmp(s.rstd.p, sh[0].rstd.p, NG * sizeof(A)))
      why += " stats-differ-between-shards";

  // backward: the saved mean's residual from the merged mean, sums per shard added in shard
  // order in float64, dx per shard from the totals
  Buf<A> r(NG), group_sums(2 * NG);
  for (int64_t u = 0; u < NG; ++u)
    r.p[u] = static_cast<A>((merged.p[4 * u + 1] + merged.p[4 * u + 2]) - static_cast<double>(sh[0].mean.p[u]));
  std::vector<double> tot_g(2 * NG, 0.0), tot_w(C, 0.0), tot_b(C, 0.0);
  for (Shard<T>& s : sh) {
    if (s.hw > 0) {
      K::BackwardArgs<T, W, T> a{s.dy.p, s.x.p, s.mean.p, s.rstd.p, d.w.p, d.b.p, nullptr, nullptr, nullptr};
      a.r_in = r.p;
      a.group_out = s.gsum.p;
      a.dweight_acc = s.dwp.p;
      a.dbias_acc = s.dbp.p;
      run_bwd(a, s, P::Part::Sums);
    }
    for (int64_t i = 0; i < 2 * NG; ++i) tot_g[i] += s.gsum.p[i];
    for (int64_t c = 0; c < C; ++c) {
      if (cs.hasw) tot_w[c] += s.dwp.p[c];
      if (cs.hasb) tot_b[c] += s.dbp.p[c];
    }
  }
  for (int64_t i = 0; i < 2 * NG; ++i) group_sums.p[i] = static_cast<A>(tot_g[i]);
  for (Shard<T>& s : sh) {
    if (s.hw == 0) continue;
    K::BackwardArgs<T, W, T> a{s.dy.p, s.x.p, s.mean.p, s.rstd.p, d.w.p, d.b.p, s.dx.p, nullptr, nullptr};
    a.r_in = r.p;
    a.group_in = group_sums.p;
    a.M_total = d.M;
    run_bwd(a, s, P::Part::Dx);
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  // ---------------------------------------------------------------- the whole op's outputs
  Buf<T> y(d.numel), dx(d.numel);
  Buf<W> dw(cs.hasw ? C : 0), db(cs.hasb ? C : 0);
  for (const Shard<T>& s : sh)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t p = 0; p < s.hw; ++p) {
          y.p[d.idx(n, c, s.s0 + p)] = s.y.p[d.at(n, c, p, s.hw)];
          dx.p[d.idx(n, c, s.s0 + p)] = s.dx.p[d.at(n, c, p, s.hw)];
        }
  for (int64_t c = 0; c < C; ++c) {
    if (cs.hasw) dw.p[c] = to_t<W>(tot_w[c]);
    if (cs.hasb) db.p[c] = to_t<W>(tot_b[c]);
  }
  const Errors er = reference_errors<T, W, T>(d, y.p, sh[0].mean.p, sh[0].rstd.p, dx.p, cs.hasw ? dw.p : nullptr,
                                           cs.hasb ? db.p : nullptr);
  judge<T, W, T>(er, why);
  const P::ForwardPlan& fp = fp_show;
  const P::BackwardPlan& bp = bp_show;
  const Expect& e = cs.ex;
  if (e.fwd_sched >= 0 && static_cast<int>(fp.schedule) != e.fwd_sched) why += " plan:fwd-schedule";
  if (e.bwd_sched >= 0 && static_cast<int>(bp.schedule) != e.bwd_sched) why += " plan:bwd-schedule";
  if (e.vec == 1 && (fp.vec != 1 || bp.vec != 1)) why += " plan:not-scalar";
  if (e.vec == 2 && (fp.vec == 1 || bp.vec == 1)) why += " plan:not-vectorized";
  if (e.splits_gt1 && fp.walk.splits <= 1 && fp.rows.pieces <= 1) why += " plan:splits";

  Fnv h;
  h.add(y.p, d.numel * sizeof(T));
  h.add(sh[0].mean.p, NG * sizeof(A));
  h.add(sh[0].rstd.p, NG * sizeof(A));
  h.add(dx.p, d.numel * sizeof(T));
  if (cs.hasw) h.add(dw.p, C * sizeof(W));
  if (cs.hasb) h.add(db.p, C * sizeof(W));
  std::string ks;
  for (const auto& k : kern)
    if (("," + ks + ",").find("," + k + ",") == std::string::npos) ks += (ks.empty() ? "" : ",") + k;
  const bool ok = why.empty();
  if (!ok) ++g_failures;
  const bool rows = fp.schedule == P::Schedule::Rows;
  std::printf(
      "CASE %-34s fwd[%s vec=%lld splits=%lld tpg=%lld gpb=%lld grid=%lld block=%lld shards=%zu] "
      "bwd[%s %s vec=%lld pieces=%lld sums_grid=%lld sums_block=%lld dx_splits=%lld dx_grid=%lld nb=1] kernels=%s "
      "err[y=%.2e mean=%.2e rstd=%.2e dx=%.2e dw=%.2e db=%.2e] tol=%.1e hash=%016llx ms=%.0f %s%s\n",
      cs.name.c_str(), sched_name(fp.schedule), (long long)fp.vec, (long long)(rows ? fp.rows.pieces : fp.walk.splits),
      (long long)fp.walk.tpg, (long long)fp.walk.gpb, (long long)(rows ? fp.rows.grid : fp.walk.grid),
      (long long)(rows ? fp.rows.block : fp.walk.block()), sh.size(), sched_name(bp.schedule), cs.cl ? "nhwc" : "nchw",
      (long long)bp.vec, (long long)bp.sums.pieces, (long long)bp.sums.grid, (long long)bp.sums.block,
      (long long)bp.walk.splits, (long long)bp.walk.grid, ks.c_str(), er.y, er.mean, er.rstd, er.dx, er.dw, er.db,
      tol_of<T>(), (unsigned long long)h.h, ms, ok ? "PASS" : "FAIL", why.c_str());
  std::fflush(stdout);
}
