// What the CPU kernels derived their tuning from on this machine, and a switch of the fresh-
// output huge pages (for interleaved A/B measurements): defined in cpu/group_norm_cpu.cpp,
// exposed to Python as groupnorm_cuda._C.cpu_tuning() / set_cpu_huge_pages().
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace groupnorm_cuda {
namespace cpu {

std::map<std::string, int64_t> tuning_report();
void set_huge_pages(bool on);

}  // namespace cpu
}  // namespace groupnorm_cuda
