// A device is a kind plus an index. Every tensor names one; kernels dispatch on its kind.
//
// [Note: a second host device] cpu:1 (any cpu index > 0) is host memory and runs the host
// kernels, but it is a different device for every same-device check (ops refuse to mix cpu:0
// and cpu:1 tensors) and `to` copies between them. Tests put a model on cpu:1 and feed it
// host (cpu:0) inputs: every tensor a model creates on the wrong device, and every input it
// forgets to move, is then an error on the CPU machines, which is what a GPU would find first
// (tests/ps3/model/device_placement_test.cpp). Real code only ever uses cpu (index 0) and cuda:N.
#pragma once

#include <string>

namespace hd {

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int index) { return {DeviceType::cuda, index}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool operator==(const Device&) const = default;
  std::string str() const {
    if (type == DeviceType::cpu) return index == 0 ? "cpu" : "cpu:" + std::to_string(index);
    return "cuda:" + std::to_string(index);
  }
};

}  // namespace hd
