// The case table of kernel_harness.cpp (included by it after Case / Expect): which shapes,
// dtypes, layouts, schedules and overrides the harness runs, with their subset tags and the plan
// each case must get (Expect). Not a standalone header.
#pragma once

static P::Overrides ov_onchip(int64_t tpg, int64_t gpb, int64_t vec = 0) {
  P::Overrides o;
  o.schedule = P::Schedule::OnChip;
  o.threads_per_group = tpg;
  o.groups_per_block = gpb;
  o.vec = vec;
  return o;
}
static P::Overrides ov_split(int64_t vec = 0) {
  P::Overrides o;
  o.schedule = P::Schedule::Split;
  o.splits = 3;
  o.pieces = 3;
  o.threads_per_group = 64;
  o.vec = vec;
  return o;
}
static P::Overrides ov_rows(int64_t pieces) {
  P::Overrides o;
  o.schedule = P::Schedule::Rows;
  o.splits = pieces;
  return o;
}
static P::Overrides ov_auto() { return P::Overrides{}; }

static std::vector<Case> make_cases() {
  std::vector<Case> v;
  const P::Overrides AUTO = ov_auto(), ON1 = ov_onchip(32, 1), ON3 = ov_onchip(32, 3), SPLIT = ov_split(),
                     SPLIT_S = ov_split(1), ON1_S = ov_onchip(32, 1, 1), ON3_S = ov_onchip(32, 3, 1);
  Expect eON1; eON1.fwd_sched = 0; eON1.bwd_sched = 0;
  Expect eON3; eON3.fwd_sched = 0; eON3.bwd_sched = 0; eON3.gpb_gt1 = true;
  Expect eSP; eSP.fwd_sched = 1; eSP.bwd_sched = 1; eSP.splits_gt1 = true; eSP.pieces_gt1 = true;
  auto vecd = [](Expect e) { e.vec = 2; return e; };
  auto scal = [](Expect e) { e.vec = 1; return e; };
  auto add = [&](const std::string& name, DT dt, bool wf, int64_t N, int64_t C, int64_t HxW, int64_t G, bool cl,
                 bool silu, bool hw, bool hb, P::Overrides ov, unsigned tags, Expect ex = Expect{},
                 Mask mask = ALL, double m0 = 0.0, double s0 = 1.0, bool mis = false, int64_t sm = 4) {
    v.push_back(Case{name, dt, wf, N, C, HxW, G, cl, silu, hw, hb, ov, sm, m0, s0, mask, mis, tags, ex});
  };
  const char* L[2] = {"nchw", "nhwc"};
  const unsigned Q = T_QUICK;

  // fp32: every schedule x layout x SiLU, vectorized.
  for (int cl = 0; cl < 2; ++cl)
    for (int si = 0; si < 2; ++si) {
      const std::string sfx = std::string(L[cl]) + (si ? "_silu" : "");
      const unsigned tsan = (si == cl) ? T_TSAN : 0u;  // nchw plain + nhwc silu under TSan
      const unsigned asan = (si != cl) ? T_ASAN : 0u;  // nchw silu + nhwc plain under ASan
      add("f32_onchip1_" + sfx, DT::F32, false, 2, 16, 24, 4, cl, si, true, true, ON1, Q | tsan | asan | T_MUT,
          vecd(eON1));
      add("f32_onchip3_" + sfx, DT::F32, false, 3, 16, 20, 4, cl, si, true, true, ON3, Q | tsan | asan, vecd(eON3));
      add("f32_split_" + sfx, DT::F32, false, 2, 16, 40, 4, cl, si, true, true, SPLIT, Q | tsan | asan | T_MUT,
          vecd(eSP));
      add("f32_auto_" + sfx, DT::F32, false, 2, 16, 24, 4, cl, si, true, true, AUTO, Q);
    }
  // fp32 scalar paths: forced vec=1 and shapes that are not vector multiples (HxW = 7x9, D odd).
  for (int cl = 0; cl < 2; ++cl) {
    const std::string l = L[cl];
    add("f32_split_vec1_" + l, DT::F32, false, 2, 16, 40, 4, cl, false, true, true, SPLIT_S,
        Q | T_ASAN | (cl ? T_TSAN : 0u) | T_MUT, scal(eSP));
    add("f32_onchip1_vec1_" + l, DT::F32, false, 2, 16, 24, 4, cl, true, true, true, ON1_S, Q, scal(eON1));
    add("f32_onchip3_vec1_" + l, DT::F32, false, 3, 8, 20, 4, cl, false, true, true, ON3_S, 0, scal(eON3));
    add("f32_hw63_d3_split_" + l, DT::F32, false, 2, 9, 63, 3, cl, true, true, true, SPLIT, Q | T_TSAN,
        scal(eSP));
    add("f32_hw63_d3_auto_" + l, DT::F32, false, 2, 15, 63, 5, cl, false, true, true, AUTO, 0, scal(Expect{}));
  }
  // NCHW "flat" groups: HxW = 7x7 is not a multiple of the vector but each group's run is
  // (M = 4 x 49 floats, 8 x 49 bf16, 2 x 49 doubles): 16-byte vectors that cross from one
  // channel into the next, on chip (1 and 3 groups per CTA), on clusters (chunks ending inside
  // a channel), the split forward (its backward scalar: per-channel rows); HxW = 3 < V stays
  // scalar.
  {
    P::Overrides c3; c3.schedule = P::Schedule::Cluster; c3.splits = 3;
    Expect eF1 = vecd(eON1), eF3 = vecd(eON3);
    Expect eFC; eFC.fwd_sched = 3; eFC.bwd_sched = 3; eFC.vec = 2;
    Expect eFS; eFS.fwd_sched = 1; eFS.bwd_sched = 1;
    add("f32_flat49_onchip1_silu_nchw", DT::F32, false, 2, 16, 49, 4, false, true, true, true, ON1,
        Q | T_TSAN | T_ASAN | T_MUT, eF1);
    add("f32_flat49_onchip3_nchw", DT::F32, false, 3, 16, 49, 4, false, false, true, false, ON3, Q | T_ASAN, eF3);
    add("f32_flat49_cluster3_silu_nchw", DT::F32, false, 2, 16, 49, 4, false, true, true, true, c3, Q | T_TSAN | T_ASAN,
        eFC);
    add("f32_flat49_split_nchw", DT::F32, false, 2, 16, 49, 4, false, true, true, true, SPLIT, Q | T_TSAN, eFS);
    add("f32_flat49_mask_dx_only_nchw", DT::F32, false, 2, 16, 49, 4, false, false, true, true, ON1, Q, eF1, DX_ONLY);
    add("bf16_flat49_onchip1_silu_nchw", DT::BF16, false, 2, 32, 49, 4, false, true, true, true, ON1, Q | T_ASAN, eF1);
    add("f16wf32_flat49_cluster3_nchw", DT::F16, true, 2, 32, 49, 4, false, false, true, true, c3, Q | T_TSAN, eFC);
    add("f64_flat49_onchip3_nchw", DT::F64, false, 3, 8, 49, 4, false, true, true, true, ON3, Q, eF3);
    add("f32_flat49_auto_mean1e4_nchw", DT::F32, false, 2, 16, 49, 4, false, true, true, true, AUTO, Q, vecd(Expect{}),
        ALL, 1e4, 1e-2);
    add("f32_hw3_scalar_nchw", DT::F32, false, 2, 16, 3, 4, false, true, true, true, AUTO, Q, scal(Expect{}));
  }
  // Misaligned tensors: the vectorized plan must be refused and fit_*_plan must re-plan scalar.
  add("f32_misaligned_split_nchw", DT::F32, false, 2, 16, 40, 4, false, false, true, true, SPLIT, Q | T_ASAN,
      eSP, ALL, 0, 1, true);
  add("f32_misaligned_onchip_nhwc", DT::F32, false, 2, 16, 24, 4, true, true, true, true, ON1, 0, eON1, ALL, 0, 1,
      true);
  // Affine variants and output masks.
  for (int cl = 0; cl < 2; ++cl) {
    const std::string l = L[cl];
    add("f32_affine_none_" + l, DT::F32, false, 2, 16, 40, 4, cl, false, false, false, SPLIT, Q, eSP);
    add("f32_affine_none_silu_" + l, DT::F32, false, 2, 16, 24, 4, cl, true, false, false, ON3, 0, eON3);
    add("f32_weight_only_" + l, DT::F32, false, 2, 16, 40, 4, cl, true, true, false, SPLIT, Q, eSP);
    add("f32_bias_only_" + l, DT::F32, false, 2, 16, 24, 4, cl, true, false, true, ON1, Q, eON1);
    add("f32_mask_dx_only_" + l, DT::F32, false, 2, 16, 40, 4, cl, true, true, true, SPLIT, Q | (cl ? T_TSAN : T_ASAN),
        eSP, DX_ONLY);
    add("f32_mask_params_only_" + l, DT::F32, false, 2, 16, 40, 4, cl, true, true, true, SPLIT,
        Q | (cl ? T_ASAN : T_TSAN), eSP, PARAMS_ONLY);
    add("f32_mask_dx_only_onchip_" + l, DT::F32, false, 2, 16, 24, 4, cl, true, true, true, ON3, Q, eON3, DX_ONLY);
    add("f32_mask_params_only_onchip_" + l, DT::F32, false, 2, 16, 24, 4, cl, false, true, false, ON1,
        Q | (cl ? T_TSAN : T_ASAN), eON1, PARAMS_ONLY);
    // More channels than threads in the on-chip backward's per-channel sums (1 lane each, 3 trips).
    add("f32_onchip_hw1_d96_" + l, DT::F32, false, 2, 96, 1, 1, cl, true, true, true, ON1, Q | (cl ? T_ASAN : T_TSAN),
        eON1);
  }
  // Large mean, small spread (the shifted statistics and the mean-rounding correction).
  for (int cl = 0; cl < 2; ++cl) {
    const std::string l = L[cl];
    add("f32_mean1e4_onchip_" + l, DT::F32, false, 2, 8, 16, 2, cl, false, true, true, ON1, Q, eON1, ALL, 1e4, 1e-2);
    add("f32_mean1e4_split_silu_" + l, DT::F32, false, 2, 8, 64, 2, cl, true, true, true, SPLIT, Q, eSP, ALL, 1e4,
        1e-2);
    add("f64_mean1e4_split_" + l, DT::F64, false, 2, 8, 64, 2, cl, true, true, true, SPLIT, 0, eSP, ALL, 1e4, 1e-2);
  }
  // Channels-last groups that are not whole vectors (D = 6 with 4 floats per vector) but rows
  // are: the rows schedule (pieces 1 and 3, idle threads in the last warp, SiLU, affine
  // variants, planner auto) and, misaligned, its refusal and the scalar re-plan.
  {
    Expect eR; eR.fwd_sched = 2; eR.bwd_sched = 2; eR.vec = 0;
    add("f32_rows3_nhwc", DT::F32, false, 2, 24, 20, 4, true, false, true, true, ov_rows(3), Q | T_TSAN | T_ASAN, eR);
    add("f32_rows1_silu_nhwc", DT::F32, false, 2, 24, 20, 4, true, true, true, true, ov_rows(1), Q | T_TSAN, eR);
    add("f32_rows3_affine_none_nhwc", DT::F32, false, 3, 24, 7, 4, true, true, false, false, ov_rows(3), Q | T_ASAN, eR);
    // D = 3 < 4: vectors spanning two groups
    add("f32_rows3_weight_only_d3_nhwc", DT::F32, false, 2, 24, 20, 8, true, false, true, false, ov_rows(3), 0, eR);
    // the planner's own choice: bundles (below)
    Expect eBA; eBA.fwd_sched = 4; eBA.bwd_sched = 4;
    add("f32_bundle_auto_hw400_nhwc", DT::F32, false, 1, 24, 400, 4, true, true, true, true, AUTO, Q, eBA);
    add("f32_rows_mean1e4_nhwc", DT::F32, false, 2, 24, 40, 4, true, false, true, true, ov_rows(3), Q, eR, ALL, 1e4, 1e-2);
    add("f32_rows3_mask_dx_only_nhwc", DT::F32, false, 2, 24, 20, 4, true, true, true, true, ov_rows(3), Q | T_TSAN, eR,
        DX_ONLY);
    add("f32_rows3_mask_params_only_nhwc", DT::F32, false, 2, 24, 20, 4, true, false, true, true, ov_rows(3),
        Q | T_ASAN, eR, PARAMS_ONLY);
    Expect eRmis; eRmis.fwd_sched = 1; eRmis.vec = 1;
    add("f32_rows_misaligned_nhwc", DT::F32, false, 2, 24, 20, 4, true, false, true, true, ov_rows(3), Q | T_ASAN, eRmis,
        ALL, 0, 1, true);
  }
  // Real block sizes chosen by the planner (sm_count = 4: small grids).
  // 32 KiB groups: the forward on chip within 48 KiB, the backward's x and dy (64 KiB) on chip
  // with the shared-memory opt-in; 64 KiB groups: both directions past 48 KiB (the emulator
  // refuses such a launch unless the launcher raised the kernel's limit first).
  add("f32_big_onchip512_nchw", DT::F32, false, 2, 16, 512, 1, false, false, true, true, ov_onchip(0, 0),
      T_TSAN | T_ASAN, [] { Expect e; e.fwd_sched = 0; e.bwd_sched = 0; e.min_block = 512; return e; }());
  add("f32_big_onchip_optin_silu_nhwc", DT::F32, false, 2, 16, 1024, 1, true, true, true, true, ov_onchip(0, 0),
      Q | T_ASAN, [] { Expect e; e.fwd_sched = 0; e.bwd_sched = 0; e.min_block = 512; return e; }());
  // Thread-block clusters (forward): a group per cluster of 2-4 CTAs, chunks in each CTA's shared
  // memory, partials through distributed shared memory; both layouts, SiLU, large mean, 16-bit
  // types, a cluster of 3 (uneven chunks), and the planner's own choice (sm_count = 4).
  {
    P::Overrides c4; c4.schedule = P::Schedule::Cluster; c4.splits = 4;
    P::Overrides c3 = c4; c3.splits = 3;
    P::Overrides c2t = c4; c2t.splits = 2; c2t.threads_per_group = 64;
    Expect eC; eC.fwd_sched = 3; eC.bwd_sched = 3; eC.vec = 2;
    add("f32_cluster4_nchw", DT::F32, false, 2, 16, 64, 2, false, false, true, true, c4, Q | T_TSAN | T_ASAN | T_MUT, eC);
    add("f32_cluster4_silu_nhwc", DT::F32, false, 2, 16, 64, 2, true, true, true, true, c4, Q | T_TSAN | T_ASAN, eC);
    add("f32_cluster3_nhwc", DT::F32, false, 3, 8, 50, 2, true, false, false, true, c3, Q | T_ASAN, eC);
    add("f32_cluster2_tpg64_mean1e4_nchw", DT::F32, false, 2, 8, 256, 1, false, true, true, true, c2t, Q, eC, ALL,
        1e4, 1e-2);
    add("bf16_cluster4_silu_nhwc", DT::BF16, true, 2, 32, 64, 2, true, true, true, true, c4, Q | T_TSAN, eC);
    add("f16_cluster4_nchw", DT::F16, false, 2, 16, 64, 2, false, false, true, false, c4, Q, eC);
    add("f32_cluster_auto_nchw", DT::F32, false, 1, 8, 1024, 2, false, false, true, true, AUTO, Q, eC);
    add("f32_cluster4_mask_dx_only_nhwc", DT::F32, false, 2, 16, 64, 2, true, true, true, true, c4, Q | T_TSAN, eC,
        DX_ONLY);
    add("f32_cluster4_mask_params_only_nchw", DT::F32, false, 2, 16, 64, 2, false, true, true, true, c4, Q | T_ASAN,
        eC, PARAMS_ONLY);
    add("f32_cluster3_hw1_d96_nchw", DT::F32, false, 2, 96, 4, 1, false, true, true, true, c3, Q, eC);
    // chunk boundaries inside a channel (NCHW: 80 of a channel's 60 elements) and inside a row
    // of channels (NHWC: 5 vectors per chunk, 2 per row)
    add("f32_cluster3_split_channel_nchw", DT::F32, false, 2, 8, 60, 2, false, true, true, true, c3, Q | T_TSAN, eC);
    add("f32_cluster4_split_row_silu_nhwc", DT::F32, false, 2, 16, 9, 2, true, true, true, true, c4, Q | T_ASAN, eC);
  }
  // Bundles (gn_fwd_bundle, gn_bwd_bundle): channels-last groups that are not whole vectors, k
  // groups at a time on one CTA or a cluster: D = 10 (k = 2, 5 vectors per row), D = 3 (k = 4,
  // vectors across groups at both ends), uneven chunks (3 ranks over 20 rows; 4 over 10), SiLU,
  // large mean, affine variants, output masks, 16-bit (bf16 D = 10: k = 4) and fp64 (D = 3,
  // V = 2), the planner's choice with and without clusters, CTAs of 512 (forward) and 256
  // threads (the backward's 16-bit limit).
  {
    auto bnd = [](int64_t cs) { P::Overrides o; o.schedule = P::Schedule::Bundle; o.splits = cs; return o; };
    Expect eB; eB.fwd_sched = 4; eB.bwd_sched = 4;
    Expect eBc = eB; eBc.splits_gt1 = true;
    add("f32_bundle1_nhwc", DT::F32, false, 2, 40, 18, 4, true, false, true, true, bnd(1),
        Q | T_TSAN | T_ASAN | T_MUT, eB);
    add("f32_bundle3_silu_nhwc", DT::F32, false, 2, 40, 20, 4, true, true, true, true, bnd(3), Q | T_TSAN | T_ASAN | T_MUT,
        eBc);
    add("f32_bundle2_d3_weight_only_nhwc", DT::F32, false, 2, 24, 14, 8, true, false, true, false, bnd(2), Q | T_ASAN,
        eBc);
    add("f32_bundle2_mean1e4_nhwc", DT::F32, false, 2, 40, 16, 4, true, true, true, true, bnd(2), Q, eBc, ALL, 1e4, 1e-2);
    add("f32_bundle4_affine_none_nhwc", DT::F32, false, 3, 40, 10, 4, true, true, false, false, bnd(4), Q | T_TSAN, eBc);
    add("bf16wf32_bundle2_silu_nhwc", DT::BF16, true, 2, 40, 12, 4, true, true, true, true, bnd(2), Q | T_TSAN, eBc);
    add("bf16_bundle1_d20_nhwc", DT::BF16, false, 2, 80, 9, 4, true, false, true, true, bnd(1), Q | T_ASAN, eB);
    add("f16_bundle2_nhwc", DT::F16, false, 2, 40, 16, 4, true, false, true, false, bnd(2), Q, eBc);
    add("f64_bundle2_d3_nhwc", DT::F64, false, 2, 6, 15, 2, true, true, true, true, bnd(2), Q, eBc);
    Expect eBa = eB; eBa.splits_gt1 = true;
    add("f32_bundle_auto_cluster_nhwc", DT::F32, false, 1, 40, 256, 4, true, false, true, true, AUTO, Q, eBa);
    add("f32_bundle_auto_sm80_nhwc", DT::F32, false, 1, 40, 64, 4, true, true, true, true, AUTO, Q, eB);
    v.back().max_cluster = 1;  // no clusters: one CTA per bundle
    Expect eB512 = eB; eB512.min_block = 512;
    add("f32_bundle1_block512_nhwc", DT::F32, false, 1, 40, 512, 4, true, false, true, true, bnd(1), Q, eB512);
    add("bf16_bundle1_block256_silu_nhwc", DT::BF16, false, 1, 40, 300, 4, true, true, true, true, bnd(1), Q, eB);
    add("f32_bundle2_mask_dx_only_nhwc", DT::F32, false, 2, 40, 12, 4, true, true, true, true, bnd(2), Q | T_TSAN, eBc,
        DX_ONLY);
    add("f32_bundle3_mask_params_only_nhwc", DT::F32, false, 2, 40, 12, 4, true, true, true, true, bnd(3), Q | T_ASAN,
        eBc, PARAMS_ONLY);
  }
  // Non-portable clusters of 16 CTAs (sm_90 with cudaFuncAttributeNonPortableClusterSizeAllowed,
  // which the launcher sets; the emulator refuses a launch without it), and a device that cannot
  // place them: fit_*_plan asks (cudaOccupancyMaxActiveClusters) and re-plans with 8.
  {
    P::Overrides c16; c16.schedule = P::Schedule::Cluster; c16.splits = 16;
    P::Overrides b16; b16.schedule = P::Schedule::Bundle; b16.splits = 16;
    Expect e16; e16.fwd_sched = 3; e16.bwd_sched = 3; e16.cluster = 16;
    Expect e8 = e16; e8.cluster = 8;
    Expect eb16; eb16.fwd_sched = 4; eb16.bwd_sched = 4; eb16.cluster = 16;
    add("f32_cluster16_silu_nchw", DT::F32, false, 2, 16, 256, 2, false, true, true, true, c16, Q | T_TSAN, e16);
    v.back().max_cluster = 16;
    add("f32_cluster16_device8_nhwc", DT::F32, false, 2, 16, 256, 2, true, false, true, true, c16, Q, e8);
    v.back().max_cluster = 16;
    v.back().device_cluster = 8;
    add("f32_bundle16_silu_nhwc", DT::F32, false, 1, 40, 64, 4, true, true, true, true, b16, Q | T_ASAN, eb16);
    v.back().max_cluster = 16;
  }
  // On-chip backward with nb samples per CTA adding their dweight/dbias terms (one row of terms
  // per CTA of samples): N not a multiple of nb (a CTA with one sample), G not a multiple of
  // the groups per sample (idle slots), spatial size 1, SiLU, both masks, 16-bit with W = fp32.
  {
    P::Overrides on4 = ov_onchip(32, 4);
    P::Overrides on4s2 = on4; on4s2.samples_per_block = 2;
    P::Overrides on4s1 = on4; on4s1.samples_per_block = 1;
    auto ens = [](int64_t nb) { Expect e; e.bwd_sched = 0; e.samples = nb; return e; };
    add("f32_onchip_nb4_hw1_nchw", DT::F32, false, 5, 16, 1, 4, false, false, true, true, on4, Q | T_TSAN | T_ASAN,
        ens(4));
    add("f32_onchip_nb2_g3_silu_nhwc", DT::F32, false, 4, 12, 4, 3, true, true, true, true, on4s2, Q | T_TSAN,
        ens(2));
    add("f32_onchip_nb4_params_only_nchw", DT::F32, false, 6, 16, 2, 4, false, true, true, true, on4, T_ASAN, ens(4),
        PARAMS_ONLY);
    add("f32_onchip_nb4_dx_only_nhwc", DT::F32, false, 6, 16, 2, 4, true, false, true, false, on4, 0, ens(4), DX_ONLY);
    add("f32_onchip_nb1_hw1_nchw", DT::F32, false, 5, 16, 1, 4, false, false, true, true, on4s1, 0, ens(1));
    add("bf16wf32_onchip_nb4_silu_nchw", DT::BF16, true, 5, 32, 8, 4, false, true, true, true, on4, T_ASAN, ens(4));
    add("f16_onchip_nb2_nhwc", DT::F16, false, 3, 64, 3, 4, true, false, true, true, on4s2, 0, ens(2));
  }
  add("f32_big_auto_split_nchw", DT::F32, false, 2, 32, 256, 2, false, true, true, true, AUTO, 0,
      [] { Expect e; e.fwd_sched = 1; e.splits_gt1 = true; return e; }());
  v.back().max_cluster = 1;  // a device without clusters (sm_80): the split schedule
  add("f32_big_auto_nhwc", DT::F32, false, 2, 64, 64, 2, true, false, true, true, AUTO, 0,
      [] { Expect e; e.pieces_gt1 = true; e.vec = 2; return e; }());
  v.back().max_cluster = 1;
  add("f32_big_auto_onchip256_nhwc", DT::F32, false, 2, 32, 128, 4, true, true, true, false, AUTO, T_TSAN,
      [] { Expect e; e.fwd_sched = 0; e.bwd_sched = 0; e.min_block = 256; return e; }(), ALL, 0, 1, false, 1);
  add("f32_big_auto_onchip256_nchw", DT::F32, false, 2, 32, 128, 4, false, true, true, true, AUTO, T_ASAN,
      [] { Expect e; e.fwd_sched = 0; e.bwd_sched = 0; e.min_block = 256; return e; }(), ALL, 0, 1, false, 1);

  // y in float from a 16-bit x (O = float, W = float: the CUDA glue's autocast path, which reads
  // the 16-bit input and writes autocast's float32 output without a float32 copy of x): every
  // forward schedule, both layouts, SiLU, the 32-byte output vectors (two 16-byte stores), the
  // scalar paths and the misaligned re-plan. y is judged at float's tolerance: a 16-bit rounding
  // of y fails.
  {
    P::Overrides c3; c3.schedule = P::Schedule::Cluster; c3.splits = 3;
    P::Overrides c4 = c3; c4.splits = 4;
    P::Overrides b2; b2.schedule = P::Schedule::Bundle; b2.splits = 2;
    Expect eC; eC.fwd_sched = 3; eC.bwd_sched = 3; eC.vec = 2;
    Expect eR; eR.fwd_sched = 2; eR.bwd_sched = 2;
    Expect eB; eB.fwd_sched = 4; eB.bwd_sched = 4; eB.splits_gt1 = true;
    auto of32 = [&](const std::string& name, DT dt, int64_t N, int64_t C, int64_t HxW, int64_t G, bool cl, bool silu,
                    bool hw, bool hb, P::Overrides ov, unsigned tags, Expect ex, bool mis = false) {
      add(name, dt, true, N, C, HxW, G, cl, silu, hw, hb, ov, tags, ex, ALL, 0.0, 1.0, mis);
      v.back().ofloat = true;
    };
    of32("bf16of32_onchip3_silu_nchw", DT::BF16, 3, 32, 16, 4, false, true, true, true, ON3, Q | T_TSAN, vecd(eON3));
    of32("f16of32_onchip1_nhwc", DT::F16, 2, 16, 16, 2, true, false, true, false, ON1, Q | T_ASAN, vecd(eON1));
    of32("bf16of32_split_nhwc", DT::BF16, 2, 16, 64, 2, true, false, true, true, SPLIT, Q | T_ASAN, vecd(eSP));
    of32("f16of32_split_vec1_silu_nchw", DT::F16, 2, 16, 64, 2, false, true, false, true, SPLIT_S, Q, scal(eSP));
    of32("bf16of32_hw63_split_nhwc", DT::BF16, 2, 9, 63, 3, true, true, true, true, SPLIT, Q, scal(eSP));
    of32("bf16of32_flat49_cluster3_silu_nchw", DT::BF16, 2, 32, 49, 4, false, true, true, true, c3, Q | T_TSAN, eC);
    of32("f16of32_cluster4_silu_nhwc", DT::F16, 2, 32, 64, 2, true, true, true, true, c4, Q, eC);
    of32("bf16of32_rows3_silu_nhwc", DT::BF16, 2, 40, 18, 4, true, true, true, true, ov_rows(3), Q | T_ASAN, eR);
    of32("f16of32_bundle2_nhwc", DT::F16, 2, 40, 16, 4, true, false, true, false, b2, Q | T_TSAN, eB);
    of32("bf16of32_misaligned_onchip_nchw", DT::BF16, 2, 16, 24, 4, false, true, true, true, ON1, Q | T_ASAN, eON1, true);
  }
  // fp64 / fp16 / bf16 (W = T and W = float).
  struct DCase { const char* n; DT dt; bool wf; };
  const DCase dts[] = {{"f64", DT::F64, false}, {"f16", DT::F16, false}, {"f16wf32", DT::F16, true},
                       {"bf16", DT::BF16, false}, {"bf16wf32", DT::BF16, true}};
  for (const DCase& d : dts) {
    const std::string p = d.n;
    const bool main16 = (d.dt == DT::F16 && d.wf) || (d.dt == DT::BF16 && !d.wf);
    for (int cl = 0; cl < 2; ++cl) {
      const std::string l = L[cl];
      const unsigned tsan = (main16 && cl == 1) || (d.dt == DT::F64 && cl == 0) ? T_TSAN : 0u;
      const unsigned asan = (main16 && cl == 0) || (d.dt == DT::F64 && cl == 1) ? T_ASAN : 0u;
      add(p + "_onchip3_silu_" + l, d.dt, d.wf, 3, 32, 16, 4, cl, true, true, true, ON3, Q | tsan, vecd(eON3));
      add(p + "_split_" + l, d.dt, d.wf, 2, 16, 64, 2, cl, false, true, true, SPLIT, Q | asan, vecd(eSP));
      add(p + "_onchip1_" + l, d.dt, d.wf, 2, 16, 16, 2, cl, false, true, false, ON1, 0, vecd(eON1));
      // 16-bit scalar paths under the sanitizers too (the other layout than the vector cases above)
      add(p + "_split_vec1_silu_" + l, d.dt, d.wf, 2, 16, 64, 2, cl, true, false, true, SPLIT_S, asan ? T_TSAN : 0u,
          scal(eSP));
      add(p + "_hw63_split_" + l, d.dt, d.wf, 2, 9, 63, 3, cl, true, true, true, SPLIT, Q | (tsan ? T_ASAN : 0u),
          scal(eSP));
    }
    // rows schedule: 10 channels per group (SD UNet's 320 / 32), 3 for fp64 (2 per vector)
    Expect eR; eR.fwd_sched = 2; eR.bwd_sched = 2;
    const int64_t rc = d.dt == DT::F64 ? 6 : 40, rg = d.dt == DT::F64 ? 2 : 4;
    add(p + "_rows3_silu_nhwc", d.dt, d.wf, 2, rc, 18, rg, true, true, true, true, ov_rows(3),
        Q | (main16 ? T_TSAN | T_ASAN : 0u), eR);
  }

  // The split ops (split_harness.h) over uneven shards of the spatial positions, an empty one
  // among them: the walk schedule (vectors, scalars, NCHW flat groups), the rows schedule, SiLU,
  // data with a large mean, absent parameters, every dtype.
  {
    auto split_add = [&](const std::string& name, DT dt, bool wf, int64_t C, int64_t G, bool cl, bool silu, bool hw,
                         bool hb, P::Overrides ov, unsigned tags, Expect ex, std::vector<int64_t> shards,
                         double m0 = 0.0) {
      int64_t hwsum = 0;
      for (int64_t l : shards) hwsum += l;
      add(name, dt, wf, 2, C, hwsum, G, cl, silu, hw, hb, ov, tags, ex, ALL, m0, 1.0);
      v.back().shards = shards;
    };
    Expect eS; eS.fwd_sched = 1; eS.bwd_sched = 1;
    Expect eR; eR.fwd_sched = 2; eR.bwd_sched = 2;
    Expect eSv = vecd(eS), eSs = scal(eS), eSsp = vecd(eS);
    eSsp.splits_gt1 = true;
    const std::vector<int64_t> even4 = {12, 0, 8, 20}, odd = {7, 0, 33}, two = {5, 13};
    for (int cl = 0; cl < 2; ++cl) {
      const std::string l = L[cl];
      split_add("f32_shards_" + l, DT::F32, false, 16, 4, cl, false, true, true, AUTO, Q | T_TSAN | T_ASAN, eSv, even4);
      split_add("f32_shards_silu_" + l, DT::F32, false, 16, 4, cl, true, true, true, SPLIT, Q | T_MUT, eSsp, even4);
      split_add("f32_shards_mean1e4_" + l, DT::F32, false, 16, 4, cl, true, false, true, AUTO, 0, eSv, even4, 1e4);
      split_add("f32_shards_odd_" + l, DT::F32, false, 12, 4, cl, true, true, false, AUTO, Q | (cl ? T_ASAN : T_TSAN),
                Expect{}, odd);
      split_add("f32_shards_vec1_" + l, DT::F32, false, 16, 4, cl, false, true, true, SPLIT_S, 0, eSs, even4);
    }
    split_add("f32_shards_rows_silu_nhwc", DT::F32, false, 40, 4, true, true, true, true, AUTO, Q | T_TSAN | T_ASAN,
              eR, two);
    split_add("bf16_shards_rows_nhwc", DT::BF16, false, 40, 4, true, false, true, true, AUTO, 0, eR, two);
    split_add("f64_shards_silu_nchw", DT::F64, false, 16, 4, false, true, true, true, AUTO, Q, eSv, even4);
    split_add("f16wf32_shards_silu_nhwc", DT::F16, true, 16, 2, true, true, true, true, AUTO, Q, eSv, even4);
    split_add("bf16_shards_odd_nchw", DT::BF16, false, 12, 4, false, false, true, true, AUTO, 0, Expect{}, odd);
  }
  return v;
}
