"""The modules of the groupnorm_cuda benchmark (entry point: benchmarks/bench_groupnorm.py).

* ``cases``        the case table (shapes from real models) and the --quick subset
* ``common``       dtype / layout / pass / activation names, formatting and small helpers
* ``machine``      the machine: CPU model, cache sizes, CUDA device, git commit, run metadata
* ``impls``        the implementations: candidate loading, Impl, compiled group_norm, peers
* ``correctness``  inputs per case, the float64 reference (groupnorm_cuda.reference) and the
                   checks against it
* ``timing``       rotating input buffers and the interleaved timing loop
* ``variants``     variant selection (flags -> list of variants, skipped ones with reasons)
* ``run``          one variant end to end (check, then time) and the loop over all of them
* ``report``       header, tables, summary, checks, CSV, JSON and plot
"""
