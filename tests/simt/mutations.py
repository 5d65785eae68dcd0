"""Planted bugs in the REAL kernels (csrc/cuda/kernels), for tests/simt/test_simt_kernels.py.

Each mutation copies csrc/cuda/kernels/*.cuh to <tmp>/groupnorm_simt_mutants/<name>-<hash>/cuda/kernels/,
applies ONE textual edit (the pattern must occur exactly once: if the kernel code changes and the
pattern no longer applies, the test fails loudly instead of silently testing nothing), and compiles
kernel_harness.cpp with that directory first on the include path, so `#include "cuda/kernels/..."`
resolves to the mutated copy. The originals are never touched.

    python tests/simt/mutations.py [name ...]     # build + run, print the detection
"""
from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
KERNELS = HERE.parent.parent / "csrc" / "cuda" / "kernels"
HARNESS = HERE / "kernel_harness.cpp"

_spec = importlib.util.spec_from_file_location("simt_build_for_mutations", HERE / "build.py")
simt_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(simt_build)


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str          # under csrc/cuda/kernels
    old: str           # must occur exactly once
    new: str
    mode: str          # build mode that must catch it
    what: str          # the realistic bug it stands for
    # harness arguments (a small case set that executes the mutated line)
    args: tuple[str, ...] = ("--subset", "mutation")
    # every string must appear in stderr
    expect: tuple[str, ...] = field(default_factory=tuple)
    expect_rc: int | None = None  # exact exit status, else "nonzero"
    # where `expect` is looked for: "stderr" (sanitizer / SIMT reports, which name the mutated
    # file) or "stdout" (the harness's own FAIL reasons)
    stream: str = "stderr"
    located: bool = True  # the report names the mutated file (sanitizer / device-side reports do)


MUTATIONS: dict[str, Mutation] = {m.name: m for m in [
    # (a) group Welford reduction: partials of the warps of a group go through shared `red`;
    # without the barrier, warp w reads red[..][first + lane] while lane 0 of another warp writes it.
    Mutation(
        name="a_missing_syncthreads",
        file="common.cuh",
        old="      red[2][warp] = a.m2;\n    }\n    __syncthreads();\n",
        new="      red[2][warp] = a.m2;\n    }\n    // MUTATION a: __syncthreads() removed\n",
        mode="tsan",
        what="__syncthreads() removed between the shared-memory writes and reads of group_welford",
        args=("--case-filter", "f32_split_nchw"),  # tpg = 64: two warps per group
        expect=("WARNING: ThreadSanitizer: data race", "group_welford", "common.cuh:"),
    ),
    # (b) dx loop bound `<` -> `<=`: the thread whose walk reaches e_end handles one vector past its
    # chunk; for the last group that is past the end of x / dy / dx.
    Mutation(
        name="b_off_by_one_dx_loop",
        file="backward.cuh",
        old="e < gs.e_end; e += p.dx_sched.tpg)",
        new="e <= gs.e_end; e += p.dx_sched.tpg)",
        mode="asan",
        what="gn_bwd_dx element loop bound `<` replaced by `<=` (one vector past the chunk)",
        args=("--case-filter", "f32_split_nchw"),
        expect=("ERROR: AddressSanitizer: heap-buffer-overflow", "gn_bwd_dx", "backward.cuh:"),
    ),
    # (c) vector load one element off: x + off + 1 is not 16-byte aligned for Vec<float, 4>.
    Mutation(
        name="c_misaligned_vector_load",
        file="forward.cuh",
        old="const Vec<T, V> v = load_vec<T, V>(p.x, off);",
        new="const Vec<T, V> v = load_vec<T, V>(p.x, off + 1);",
        mode="asan",
        what="gn_fwd_apply vector load offset shifted by one element",
        args=("--case-filter", "f32_split_nchw"),
        expect=("runtime error:", "misaligned address", "which requires 16 byte alignment", "load_vec",
                "gn_fwd_apply"),
    ),
    # (d) half-warp shuffle mask: lanes 16..31 call __shfl_xor_sync with a mask without themselves.
    Mutation(
        name="d_wrong_shuffle_mask",
        file="common.cuh",
        old="constexpr unsigned kFullMask = 0xffffffffu;",
        new="constexpr unsigned kFullMask = 0x0000ffffu;",
        mode="plain",
        what="shuffle mask kFullMask = 0xffffffff replaced by 0x0000ffff",
        args=("--case-filter", "f32_onchip1_nchw"),
        expect=("SIMT ERROR:", "does not include the calling lane"),
        expect_rc=87,
    ),
    # (e) the launcher re-deriving a launch configuration instead of taking the plan's: the
    # kernel tolerates the extra threads, so only the launch-log comparison sees it.
    Mutation(
        name="e_launcher_ignores_plan",
        file="launcher.cuh",
        old="        auto k = gn_bwd_params<T, W, O>;\n        GN_LAUNCH(k, grid, block, smem, stream, p);",
        new="        auto k = gn_bwd_params<T, W, O>;\n        GN_LAUNCH(k, grid, dim3(128, 1, 1), smem, stream, p);",
        mode="plain",
        what="gn_bwd_params launched with a block size of the launcher's own instead of the plan's",
        args=("--case-filter", "f32_split_nchw"),
        expect=("FAIL launcher:block:gn_bwd_params",),
        stream="stdout",
    ),
    # (f) a launch past 48 KiB of dynamic shared memory without raising the kernel's limit (on
    # a GPU: cudaErrorInvalidValue at launch); the emulator must refuse it as CUDA does.
    Mutation(
        name="f_missing_smem_optin",
        file="launch.cuh",
        old="  if (bytes > kGnDefaultDynamicSmem) ::simt::set_max_dynamic_shared(kernel, bytes);",
        new="  (void)kernel; (void)bytes;  // MUTATION f: no cudaFuncSetAttribute",
        mode="plain",
        what="the shared-memory opt-in (cudaFuncAttributeMaxDynamicSharedMemorySize) left out before a large launch",
        args=("--case-filter", "f32_big_onchip512_nchw"),
        expect=("SIMT ERROR:", "MaxDynamicSharedMemorySize"),
        expect_rc=87,
        located=False,  # a host-side launch error
    ),
    # (g) the cluster barrier between writing a CTA's partial and its peers reading it through
    # distributed shared memory: without it a peer reads the partial while it is written.
    Mutation(
        name="g_missing_cluster_sync",
        file="forward.cuh",
        old="  gn_cluster_sync();  // every CTA's partial is written\n",
        new="  // MUTATION g: cluster.sync() removed\n",
        mode="tsan",
        what="cluster.sync() removed between the partials' shared-memory writes and the peers' DSMEM reads",
        args=("--case-filter", "f32_cluster4_nchw"),
        expect=("WARNING: ThreadSanitizer: data race", "gn_fwd_cluster", "forward.cuh:"),
    ),
    # (h) the cluster barrier before exit: a CTA that leaves frees its shared memory while a peer
    # may still be reading its partial.
    Mutation(
        name="h_cluster_exit_without_sync",
        file="forward.cuh",
        old="  gn_cluster_sync();  // no CTA leaves (and frees its shared memory) while a peer may still read it\n",
        new="  // MUTATION h: final cluster.sync() removed\n",
        mode="tsan",
        what="the last cluster.sync() removed: a CTA exits while its peers may still read its shared memory",
        args=("--case-filter", "f32_cluster4_nchw"),
        expect=("WARNING: ThreadSanitizer: data race", "gn_fwd_cluster"),
    ),
    # (i) the backward's cluster barrier before the peers read a CTA's partial sums.
    Mutation(
        name="i_bwd_missing_cluster_sync",
        file="backward_tiled.cuh",
        old="  gn_cluster_sync();  // every CTA's sums and channel sums are written\n",
        new="  // MUTATION i: cluster.sync() removed\n",
        mode="tsan",
        what="cluster.sync() removed between the backward's partial sums and the peers' DSMEM reads",
        args=("--case-filter", "f32_cluster4_nchw"),
        expect=("WARNING: ThreadSanitizer: data race", "gn_bwd_cluster", "backward_tiled.cuh:"),
    ),
    # (j) a bundle's column that straddles two groups adds its first group's state to the second
    # group as well (the lane-to-group bookkeeping of gn_fwd_bundle): wrong statistics.
    Mutation(
        name="j_bundle_wrong_group_slot",
        file="forward_bundle.cuh",
        old="== gb ? 0 : 3;",
        new="== gb ? 0 : 0;",
        mode="plain",
        what="gn_fwd_bundle merges a straddling column's first-group state into the next group too",
        args=("--case-filter", "f32_bundle1_nhwc"),
        expect=("FAIL", " mean", " rstd"),
        stream="stdout",
    ),
    # (k) gn_bwd_bundle's cluster barrier between the CTAs' partial sums and the peers' reads.
    Mutation(
        name="k_bwd_bundle_missing_cluster_sync",
        file="backward_bundle.cuh",
        old="  if (cs > 1) gn_cluster_sync();  // every CTA's sums are written\n  else __syncthreads();\n",
        new="  __syncthreads();  // MUTATION k: cluster.sync() replaced by a CTA barrier\n",
        mode="tsan",
        what="cluster.sync() removed between gn_bwd_bundle's partial sums and the peers' DSMEM reads",
        args=("--case-filter", "f32_bundle3_silu_nhwc"),
        expect=("WARNING: ThreadSanitizer: data race", "gn_bwd_bundle", "backward_bundle.cuh:"),
    ),
    # (l) an NCHW flat group (HxW = 49, not a multiple of the vector): a vector that crosses into
    # the next channel normalized with its first channel's weight and bias.
    Mutation(
        name="l_flat_vector_one_channel",
        file="forward.cuh",
        old="const bool next = col + j >= geo.HxW;",
        new="const bool next = false;",
        mode="plain",
        what="fwd_epilogue ignores the channel boundary inside a vector of a flat NCHW group",
        args=("--case-filter", "f32_flat49_onchip1_silu_nchw"),
        expect=("FAIL", " y"),
        stream="stdout",
    ),
    # (m) a cluster of 16 CTAs without the kernel's cudaFuncAttributeNonPortableClusterSizeAllowed
    # (the predicate shared by the GPU and emulator launch paths): a GPU refuses the launch.
    Mutation(
        name="m_missing_nonportable_cluster_attribute",
        file="launch.cuh",
        old="inline bool gn_cluster_nonportable(unsigned cluster_x) { return cluster_x > kGnPortableCluster; }",
        new="inline bool gn_cluster_nonportable(unsigned) { return false; }  // MUTATION m: never set the attribute",
        mode="plain",
        what="clusters of more than 8 CTAs requested without the non-portable cluster attribute",
        args=("--case-filter", "f32_cluster16_silu_nchw"),
        expect=("SIMT ERROR:", "without cudaFuncAttributeNonPortableClusterSizeAllowed"),
        expect_rc=87,
        located=False,  # a host-side launch setting
    ),
    # (n) gn_bwd_onchip with several samples per CTA adds the terms of samples past N (the last
    # CTA of a batch that nb does not divide): slots that computed nothing.
    Mutation(
        name="n_onchip_terms_past_last_sample",
        file="backward_tiled.cuh",
        old="for (int ni = 0; ni < nb && nblk * nb + ni < geo.N; ++ni) {",
        new="for (int ni = 0; ni < nb; ++ni) {  // MUTATION n: also the slots past the last sample",
        mode="plain",
        what="gn_bwd_onchip sums the dweight/dbias terms of all nb slots, also those past the last sample",
        args=("--case-filter", "f32_onchip_nb4_hw1_nchw"),
        expect=("FAIL", " dw", " db"),
        stream="stdout",
    ),
    # (o) the split op apply normalizes a shard about its own first element instead of the merged
    # moments' shift (the first non-empty shard's): every shard but the first is off by the
    # difference of the two shifts.
    Mutation(
        name="o_split_apply_own_shift",
        file="forward.cuh",
        old="    s = q[0];\n",
        new="    s = gs.active ? to_acc(p.x[base]) : A(0);  // MUTATION o: the shard's own shift\n",
        mode="plain",
        what="gn_fwd_apply with given moments takes the shard's first element as the shift",
        args=("--case-filter", "f32_shards_silu_nchw"),
        expect=("FAIL", " y", " dx"),
        stream="stdout",
    ),
    # (p) backward_dx divides by the shard's element count instead of the whole group's.
    Mutation(
        name="p_split_dx_shard_count",
        file="backward.cuh",
        old="const A invM = A(1) / A(p.M_total);",
        new="const A invM = A(1) / A(p.geo.M);  // MUTATION p: this shard's count",
        mode="plain",
        what="gn_bwd_coeffs with the given group sums divides by the shard's count, not the group's",
        args=("--case-filter", "f32_shards_nhwc"),
        expect=("FAIL", " dx"),
        stream="stdout",
    ),
]}


def mutated_source(m: Mutation) -> dict[str, str]:
    """The kernel headers after the mutation (file name -> text). Raises if the pattern does not
    occur exactly once."""
    files = {p.name: p.read_text() for p in sorted(KERNELS.glob("*.cuh"))}
    if m.file not in files:
        raise AssertionError(f"mutation {m.name}: csrc/cuda/kernels/{m.file} not found")
    n = files[m.file].count(m.old)
    if n != 1:
        raise AssertionError(f"mutation {m.name}: pattern occurs {n} times in csrc/cuda/kernels/{m.file} "
                             f"(expected exactly 1; the kernel changed, update tests/simt/mutations.py):\n{m.old}")
    files[m.file] = files[m.file].replace(m.old, m.new)
    return files


def mutated_tree(m: Mutation) -> Path:
    """Writes the mutated copy; returns the directory to put first on the include path."""
    files = mutated_source(m)
    h = hashlib.sha256()
    for k in sorted(files):
        h.update(k.encode() + b"\0" + files[k].encode() + b"\0")
    root = Path(tempfile.gettempdir()) / "groupnorm_simt_mutants" / f"{m.name}-{h.hexdigest()[:12]}"
    kdir = root / "cuda" / "kernels"
    if not all((kdir / k).is_file() and (kdir / k).read_text() == v for k, v in files.items()):
        if root.exists():
            shutil.rmtree(root)
        kdir.mkdir(parents=True)
        for k, v in files.items():
            (kdir / k).write_text(v)
    return root


def build_mutant(m: Mutation) -> Path:
    return simt_build.build(HARNESS, m.mode, extra_flags=["-DSIMT_HARNESS_F32_ONLY"],
                            include_first=[mutated_tree(m)], variant=f"mut_{m.name}")


def run_mutant(m: Mutation, timeout: float = 240) -> tuple[int, str, str]:
    exe = build_mutant(m)
    return simt_build.run(exe, list(m.args), mode=m.mode, timeout=timeout, env={"SIMT_SEED": "1"})


def detected(m: Mutation, rc: int, out: str, err: str) -> list[str]:
    """What is missing from the expected detection ([] = detected)."""
    text = out if m.stream == "stdout" else err
    missing = [s for s in m.expect if s not in text]
    if m.expect_rc is not None and rc != m.expect_rc:
        missing.append(f"exit status {m.expect_rc} (got {rc})")
    if m.expect_rc is None and rc == 0:
        missing.append("nonzero exit status")
    return missing


def main(argv: list[str]) -> int:
    names = argv or list(MUTATIONS)
    status = 0
    for n in names:
        m = MUTATIONS[n]
        rc, out, err = run_mutant(m)
        miss = detected(m, rc, out, err)
        print(f"== {n} [{m.mode}] rc={rc} {'DETECTED' if not miss else 'NOT DETECTED: ' + str(miss)}")
        print("\n".join(err.strip().splitlines()[:40]))
        status |= bool(miss)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
