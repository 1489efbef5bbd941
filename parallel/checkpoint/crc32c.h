// CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum the checkpoint manifest
// records per dataset block. SSE4.2's crc32 instruction when the build targets it (x86-64-v3
// does), else a table-driven byte loop: the table runs at ~0.5 GB/s, below the disk, and every
// byte written and read is checksummed.
#pragma once
#include <cstddef>
#include <cstdint>

namespace hd::parallel::ckpt {

// Continues `crc` (0 to start) over `n` bytes; crc32c("123456789") == 0xE3069283.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

}  // namespace hd::parallel::ckpt
