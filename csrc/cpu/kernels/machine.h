// What the CPU kernels' tuning is derived from: the cache sizes, the CPU vendor and the
// transparent-huge-page policy that this machine reports (Linux sysfs and cpuid, read once
// per process), and the use of huge pages for fresh outputs. Why and how each tuning value follows from these: csrc/README.md.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace groupnorm_cuda {
namespace cpu {
namespace {  // internal linkage: cpu/kernels/ belongs to the one CPU translation unit

struct MachineInfo {
  int64_t l1d = 32 << 10;   // bytes, one core's L1 data cache
  int64_t l2 = 1 << 20;     // bytes, one core's share of L2 (an L2 shared by k CPUs counts 1/k)
  int64_t llc = 32 << 20;   // bytes, the last-level cache cpu0 sees (all of it, shared or not)
  int64_t huge_page = 0;    // bytes of a transparent huge page, 0 when none can be asked for
  bool thp_madvise = false; // huge pages are given on request (THP mode "madvise"), not always
  bool intel = false;       // the CPU's vendor (cpuid) is Intel: its hardware prefetchers differ
};

inline bool read_line(const std::string& path, char* buf, size_t n) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return false;
  const bool ok = std::fgets(buf, static_cast<int>(n), f) != nullptr;
  std::fclose(f);
  return ok;
}

inline int64_t parse_size(const char* s) {  // "48K", "2048K", "32M", "1234"
  char* end = nullptr;
  const long long v = std::strtoll(s, &end, 10);
  if (end == s || v <= 0) return 0;
  switch (*end) {
    case 'K': case 'k': return v << 10;
    case 'M': case 'm': return v << 20;
    case 'G': case 'g': return v << 30;
    default: return v;
  }
}

inline int64_t count_cpus(const char* list) {  // "0-3,8" -> 5
  int64_t n = 0;
  const char* p = list;
  while (*p && *p != '\n') {
    char* end = nullptr;
    const long a = std::strtol(p, &end, 10);
    if (end == p) break;
    long b = a;
    p = end;
    if (*p == '-') b = std::strtol(p + 1, const_cast<char**>(&p), 10);
    n += b - a + 1;
    if (*p == ',') ++p;
  }
  return std::max<int64_t>(n, 1);
}

inline MachineInfo read_machine_info() {
  MachineInfo m;
  char buf[256];
  int64_t best_level = 0;
  for (int idx = 0; idx < 8; ++idx) {
    const std::string d = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(idx) + "/";
    if (!read_line(d + "type", buf, sizeof buf)) break;
    if (std::strncmp(buf, "Instruction", 11) == 0) continue;
    const bool data_only = std::strncmp(buf, "Data", 4) == 0;
    if (!read_line(d + "level", buf, sizeof buf)) continue;
    const int64_t level = std::strtol(buf, nullptr, 10);
    if (!read_line(d + "size", buf, sizeof buf)) continue;
    const int64_t size = parse_size(buf);
    if (size <= 0) continue;
    int64_t sharers = 1;
    if (read_line(d + "shared_cpu_list", buf, sizeof buf)) sharers = count_cpus(buf);
    if (level == 1 && data_only) m.l1d = size;
    if (level == 2) m.l2 = size / sharers;
    if (level >= best_level && level >= 2) {
      best_level = level;
      m.llc = size;
    }
  }
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  m.intel = __builtin_cpu_is("intel");
#endif
  if (read_line("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof buf)) {
    m.thp_madvise = std::strstr(buf, "[madvise]") != nullptr;
    if (m.thp_madvise || std::strstr(buf, "[always]")) {
      m.huge_page = read_line("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", buf, sizeof buf)
                        ? parse_size(buf)
                        : int64_t{2} << 20;
    }
  }
  return m;
}

inline const MachineInfo& machine() {
  static const MachineInfo info = read_machine_info();
  return info;
}

// Huge pages for fresh outputs: off unless the environment says GROUPNORM_CPU_HUGE_PAGES=1
// (and the machine gives them on request); set_cpu_huge_pages() switches it (A/B runs).
// Off by default because their cost depends on how the host backs the memory, which the
// machine does not report: on one AMD EPYC VM large forwards took 0.33x-0.65x of the time; on
// another (Zen 5, 2026-12-02, 60 interleaved calls each) a 98 MiB forward was 7.6 ms median
// but 62 ms at the 90th percentile and 126 ms at worst (4 KiB pages: 23.4 / 24.6 / 44 ms), and
// a 32 MiB one 17.5 ms median against 8.1 ms.
inline std::atomic<bool>& huge_pages_on() {
  static std::atomic<bool> on{[] {
    const char* env = std::getenv("GROUPNORM_CPU_HUGE_PAGES");
    return machine().thp_madvise && machine().huge_page > 0 && env && env[0] == '1';
  }()};
  return on;
}

// A fresh output of `bytes` at `p`, not yet written: asks for it to be backed by huge pages
// (the 2 MiB-aligned part of it), when the kernel gives them on request only ("madvise"). Large
// tensors come from mmap and are faulted in page by page on their first write; on the VMs
// measured that write cost 3-4x a plain copy (a fresh 32 MiB fill 8.4 ms vs copy_ into an
// existing tensor 2.6 ms, AMD EPYC, 2 threads), and huge pages remove 511 of every 512
// faults. PyTorch's own allocator does the same under THP_MEM_ALLOC_ENABLE=1. Only for outputs
// of at least two huge pages (a smaller one holds at most one aligned huge page, if any);
// advice only: the values written and read are the same either way.
inline void advise_huge_pages(void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const MachineInfo& m = machine();
  if (!huge_pages_on().load(std::memory_order_relaxed) || bytes < 2 * m.huge_page) return;
  const uintptr_t hp = static_cast<uintptr_t>(m.huge_page);
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + hp - 1) & ~(hp - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes)) & ~(hp - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace
}  // namespace cpu
}  // namespace groupnorm_cuda
