// Shared-memory layouts of the cluster kernels (gn_fwd_cluster, gn_bwd_cluster, gn_fwd_bundle):
// one definition for the kernels, which carve their dynamic shared memory with them, and the
// planner, which sizes the launches.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace groupnorm_cuda {

// The chunk's vectors (16-byte aligned), then, as accumulator values: red[3][32] (the CTA's
// reduction), the CTA's partial (n, mean, M2) and the gathered partials of the cluster (3 per
// rank). Offsets after the tile are in accumulator elements.
struct ClusterSmem {
  int64_t tile_bytes, red, part, all, bytes;
};
GN_HOST_DEVICE inline ClusterSmem cluster_smem_layout(int64_t chunk_vectors, int64_t vec_bytes, int64_t acc_bytes,
                                                      int64_t cluster) {
  ClusterSmem l;
  l.tile_bytes = (chunk_vectors * vec_bytes + 15) / 16 * 16;
  l.red = 0;
  l.part = 3 * 32;
  l.all = l.part + 3;
  l.bytes = l.tile_bytes + (l.all + 3 * cluster) * acc_bytes;
  return l;
}

// The cluster backward (gn_bwd_cluster): the chunk's x and dy tiles (tile_bytes each), then, as
// accumulator values: red[3][32], this CTA's Welford partial of x (SiLU: n, mean, M2) and its
// partial sums (3), then the cluster's gathered Welford partials and sums (3 per rank each).
struct ClusterBwdSmem {
  int64_t tile_bytes, red, wpart, spart, wall, sall, bytes;
};
GN_HOST_DEVICE inline ClusterBwdSmem cluster_bwd_smem_layout(int64_t chunk_vectors, int64_t vec_bytes,
                                                             int64_t acc_bytes, int64_t cluster) {
  ClusterBwdSmem l;
  l.tile_bytes = (chunk_vectors * vec_bytes + 15) / 16 * 16;
  l.red = 0;
  l.wpart = 3 * 32;
  l.spart = l.wpart + 3;
  l.wall = l.spart + 3;
  l.sall = l.wall + 3 * cluster;
  l.bytes = 2 * l.tile_bytes + (l.sall + 3 * cluster) * acc_bytes;
  return l;
}

// The bundle forward (gn_fwd_bundle): the chunk's vectors, then, as accumulator values: the
// (n, mean, M2) of the two groups each of the `span` working threads touches (6 per thread),
// the CTA's partial per group of the bundle (3 per group), the gathered partials of the
// cluster (per group, 3 per rank) and the final (m, rstd) per group.
struct BundleSmem {
  int64_t tile_bytes, part, gpart, all, fin, bytes;
};
GN_HOST_DEVICE inline BundleSmem bundle_smem_layout(int64_t chunk_vectors, int64_t vec_bytes, int64_t acc_bytes,
                                                    int64_t span, int64_t k, int64_t cluster) {
  BundleSmem l;
  l.tile_bytes = (chunk_vectors * vec_bytes + 15) / 16 * 16;
  l.part = 0;
  l.gpart = 6 * span;
  l.all = l.gpart + 3 * k;
  l.fin = l.all + 3 * k * cluster;
  l.bytes = l.tile_bytes + (l.fin + 2 * k) * acc_bytes;
  return l;
}

}  // namespace groupnorm_cuda
