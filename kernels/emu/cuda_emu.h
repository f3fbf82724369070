// cuda_emu.h: the CUDA execution model on CPU threads, so that the kernels of
// kernels/*.cu compile with a C++20 compiler and run without a GPU.
//
// - A launch runs its blocks one after another; the threads of a block are
//   real threads (a pool of persistent workers), one per CUDA thread, so
//   races between them are real races (and ThreadSanitizer sees them).
// - threadIdx / blockIdx are per-thread (thread_local); blockDim / gridDim
//   are per launch (launches are serialised by the runtime).
// - __syncthreads() is a barrier of the block's threads; a thread that has
//   returned from the kernel no longer counts, as on the hardware.
// - __shared__ variables are function statics: one copy, used by the single
//   block that runs at a time.
// - __shfl_*_sync exchange values through a per-warp slot array between two
//   warp barriers (all 32 lanes, or the block's threads if fewer, take part).
// - atomics go through std::atomic_ref.
//
// The runtime (emu_runtime.cpp) owns the workers and the kernel registry.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

namespace ft_emu {

// A barrier of a changing set of threads: the set is reset at the start of
// every block, and a thread that leaves (returns from the kernel) stops being
// waited for.
class Barrier;

struct ThreadState {
    dim3 thread_idx;
    dim3 block_idx;
    unsigned int lane = 0;
    Barrier* block = nullptr;
    Barrier* warp = nullptr;
    unsigned long long* warp_slots = nullptr;  // 32 slots of 8 bytes
};

extern thread_local ThreadState tls;
extern dim3 launch_block_dim;
extern dim3 launch_grid_dim;

void block_sync();
void warp_sync();

}  // namespace ft_emu

#define threadIdx (ft_emu::tls.thread_idx)
#define blockIdx (ft_emu::tls.block_idx)
#define blockDim (ft_emu::launch_block_dim)
#define gridDim (ft_emu::launch_grid_dim)
#define warpSize 32

inline void __syncthreads() { ft_emu::block_sync(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ft_emu::warp_sync(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <typename T>
inline T ft_emu_shuffle(T value, int source_lane) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    using ft_emu::tls;
    unsigned long long raw = 0;
    std::memcpy(&raw, &value, sizeof(T));
    tls.warp_slots[tls.lane] = raw;
    ft_emu::warp_sync();
    T out = value;
    if (source_lane >= 0 && source_lane < 32) {
        unsigned long long got = tls.warp_slots[source_lane];
        std::memcpy(&out, &got, sizeof(T));
    }
    ft_emu::warp_sync();
    return out;
}

template <typename T>
inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
    int base = static_cast<int>(ft_emu::tls.lane) / width * width;
    return ft_emu_shuffle(v, base + ((src % width) + width) % width);
}
template <typename T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
    int lane = static_cast<int>(ft_emu::tls.lane);
    int src = lane + static_cast<int>(delta);
    bool inside = src / width == lane / width;
    T got = ft_emu_shuffle(v, src < 32 ? src : -1);
    return inside ? got : v;
}
template <typename T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
    int lane = static_cast<int>(ft_emu::tls.lane);
    int src = lane - static_cast<int>(delta);
    bool inside = src >= 0 && src / width == lane / width;
    T got = ft_emu_shuffle(v, src >= 0 ? src : -1);
    return inside ? got : v;
}
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
    int lane = static_cast<int>(ft_emu::tls.lane);
    return ft_emu_shuffle(v, (lane ^ mask) % 32 / width * width + (lane ^ mask) % width);
}

template <typename T>
inline T atomicAdd(T* address, T value) {
    return std::atomic_ref<T>(*address).fetch_add(value);
}
template <typename T>
inline T atomicMax(T* address, T value) {
    std::atomic_ref<T> a(*address);
    T old = a.load();
    while (old < value && !a.compare_exchange_weak(old, value)) {
    }
    return old;
}

// device intrinsics the kernels use, with their exact (round-to-nearest) meaning
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return static_cast<unsigned int>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline float __int_as_float(int v) {
    float f;
    std::memcpy(&f, &v, 4);
    return f;
}
inline long long __double_as_longlong(double v) {
    long long r;
    std::memcpy(&r, &v, 8);
    return r;
}
