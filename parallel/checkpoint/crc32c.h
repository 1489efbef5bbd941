// CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum the checkpoint manifest
// records per dataset block. A plain table-driven byte loop: checkpoint I/O is disk-bound, so a
// hardware (SSE4.2) path is not worth the portability cost yet.
#pragma once
#include <cstddef>
#include <cstdint>

namespace hd::parallel::ckpt {

// Continues `crc` (0 to start) over `n` bytes; crc32c("123456789") == 0xE3069283.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

}  // namespace hd::parallel::ckpt
