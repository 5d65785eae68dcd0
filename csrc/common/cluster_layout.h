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

// Bytes of a tile of `vectors` vectors of vec_bytes each, rounded to 16 (the next tile's
// alignment).
GN_HOST_DEVICE inline int64_t tile_bytes_of(int64_t vectors, int64_t vec_bytes) {
  return (vectors * vec_bytes + 15) / 16 * 16;
}

// One group slot of the on-chip backward (gn_bwd_onchip): its x tile, then its dy tile (dy's
// vectors are wider than x's when dy is float32 of a 16-bit x: dy_vec_bytes).
GN_HOST_DEVICE inline int64_t onchip_bwd_slot_bytes(int64_t vectors, int64_t x_vec_bytes, int64_t dy_vec_bytes) {
  return tile_bytes_of(vectors, x_vec_bytes) + tile_bytes_of(vectors, dy_vec_bytes);
}

// The cluster backward (gn_bwd_cluster): the chunk's x tile (tile_bytes) and dy tile
// (dy_tile_bytes), then, as accumulator values: red[3][32], this CTA's Welford partial of x
// (SiLU: n, mean, M2) and its partial sums (3), the cluster's gathered Welford partials and
// sums (3 per rank each), and the chunk's per-channel sums (2 per channel of the group).
struct ClusterBwdSmem {
  int64_t tile_bytes, dy_tile_bytes, red, wpart, spart, wall, sall, chan, bytes;
};
GN_HOST_DEVICE inline ClusterBwdSmem cluster_bwd_smem_layout(int64_t chunk_vectors, int64_t vec_bytes,
                                                             int64_t dy_vec_bytes, int64_t acc_bytes, int64_t cluster,
                                                             int64_t channels) {
  ClusterBwdSmem l;
  l.tile_bytes = tile_bytes_of(chunk_vectors, vec_bytes);
  l.dy_tile_bytes = tile_bytes_of(chunk_vectors, dy_vec_bytes);
  l.red = 0;
  l.wpart = 3 * 32;
  l.spart = l.wpart + 3;
  l.wall = l.spart + 3;
  l.sall = l.wall + 3 * cluster;
  l.chan = l.sall + 3 * cluster;
  l.bytes = l.tile_bytes + l.dy_tile_bytes + (l.chan + 2 * channels) * acc_bytes;
  return l;
}

// The bundle kernels (gn_fwd_bundle, gn_bwd_bundle): the chunk's tiles (x; the backward x and
// dy, dy's elements dy_elem_bytes each), then, as accumulator values: `per_thread` values of
// each of the `span` working threads (the forward and the backward's SiLU statistics: (n,
// mean, M2) of the two groups a thread touches; the backward's sums: sum dy', sum dy' u per
// lane, sum u of the two groups), the CTA's per-channel sums of the bundle (backward: 2 per
// channel), its per-group Welford partials and sums (3 per group each), the cluster's gathered
// partials and sums (per group, 3 per rank each) and per-group results (4 per group).
struct BundleSmem {
  int64_t tile_bytes, dy_tile_bytes, part, chan, wpart, spart, wall, sall, fin, bytes;
};
GN_HOST_DEVICE inline BundleSmem bundle_smem_layout(bool backward, int64_t chunk_vectors, int64_t V, int64_t elem_bytes,
                                                    int64_t dy_elem_bytes, int64_t acc_bytes, int64_t span, int64_t k,
                                                    int64_t cols, int64_t cluster) {
  BundleSmem l;
  l.tile_bytes = tile_bytes_of(chunk_vectors, V * elem_bytes);
  l.dy_tile_bytes = backward ? tile_bytes_of(chunk_vectors, V * dy_elem_bytes) : 0;
  const int64_t per_thread = backward && 2 * V + 2 > 6 ? 2 * V + 2 : 6;
  l.part = 0;
  l.chan = l.part + per_thread * span;
  l.wpart = l.chan + (backward ? 2 * cols * V : 0);
  l.spart = l.wpart + 3 * k;
  l.wall = l.spart + (backward ? 3 * k : 0);
  l.sall = l.wall + 3 * k * cluster;
  l.fin = l.sall + (backward ? 3 * k * cluster : 0);
  l.bytes = l.tile_bytes + l.dy_tile_bytes + (l.fin + 4 * k) * acc_bytes;
  return l;
}

}  // namespace groupnorm_cuda
