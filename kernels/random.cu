// Philox4x32-10 draws, the same stream as flowtensor's CPU generator
// (flowtensor::random): value `2b` and `2b + 1` of a draw come from block
// `counter + b` under the key `seed`; the CPU's arithmetic is reproduced
// operation by operation (explicitly rounded, so no fused multiply-add
// changes a bit):
// - uniform: `lo + (hi - lo) * u`, `u = (w1 * 2^21 + (w0 >> 11)) * 2^-53`;
// - normal: Box-Muller on the block's two uniforms.
// Results are computed in f64 and rounded to the output type.

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

__device__ __forceinline__ void philox4x32_10(u32 c[4], u32 k0, u32 k1) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        u64 p0 = (u64)PHILOX_M0 * c[0];
        u64 p1 = (u64)PHILOX_M1 * c[2];
        u32 n0 = (u32)(p1 >> 32) ^ c[1] ^ k0;
        u32 n1 = (u32)p1;
        u32 n2 = (u32)(p0 >> 32) ^ c[3] ^ k1;
        u32 n3 = (u32)p0;
        c[0] = n0;
        c[1] = n1;
        c[2] = n2;
        c[3] = n3;
    }
}

// 53 random bits of two words, in [0, 1)
__device__ __forceinline__ double ft_unit(u32 lo, u32 hi) {
    u64 bits = ((u64)hi << 21) | ((u64)lo >> 11);
    return __dmul_rn((double)bits, 1.0 / 9007199254740992.0);
}

__device__ __forceinline__ void ft_block(u64 seed, u64 block, u32 w[4]) {
    w[0] = (u32)block;
    w[1] = (u32)(block >> 32);
    w[2] = 0;
    w[3] = 0;
    philox4x32_10(w, (u32)seed, (u32)(seed >> 32));
}

template <typename T>
__device__ __forceinline__ void uniform_impl(T* y, i64 n, u64 seed, u64 counter, double lo, double hi) {
    i64 blocks = (n + 1) / 2;
    double span = __dsub_rn(hi, lo);
    FT_GRID_LOOP(b, blocks) {
        u32 w[4];
        ft_block(seed, counter + (u64)b, w);
        double u0 = __dadd_rn(lo, __dmul_rn(span, ft_unit(w[0], w[1])));
        double u1 = __dadd_rn(lo, __dmul_rn(span, ft_unit(w[2], w[3])));
        y[2 * b] = (T)u0;
        if (2 * b + 1 < n) {
            y[2 * b + 1] = (T)u1;
        }
    }
}

extern "C" __global__ void uniform_f32(float* y, i64 n, u64 seed, u64 counter, double lo, double hi) {
    uniform_impl<float>(y, n, seed, counter, lo, hi);
}
extern "C" __global__ void uniform_f64(double* y, i64 n, u64 seed, u64 counter, double lo, double hi) {
    uniform_impl<double>(y, n, seed, counter, lo, hi);
}

template <typename T>
__device__ __forceinline__ void normal_impl(T* y, i64 n, u64 seed, u64 counter, double mean, double std) {
    i64 blocks = (n + 1) / 2;
    const double tau = 6.283185307179586;
    FT_GRID_LOOP(b, blocks) {
        u32 w[4];
        ft_block(seed, counter + (u64)b, w);
        double u1 = ft_unit(w[0], w[1]), u2 = ft_unit(w[2], w[3]);
        double r = sqrt(__dmul_rn(-2.0, log(__dsub_rn(1.0, u1))));
        double angle = __dmul_rn(tau, u2);
        // mean + std * r * cos, grouped as (std * r) * cos like the CPU's expression
        double scale = __dmul_rn(std, r);
        y[2 * b] = (T)__dadd_rn(mean, __dmul_rn(scale, cos(angle)));
        if (2 * b + 1 < n) {
            y[2 * b + 1] = (T)__dadd_rn(mean, __dmul_rn(scale, sin(angle)));
        }
    }
}

extern "C" __global__ void normal_f32(float* y, i64 n, u64 seed, u64 counter, double mean, double std) {
    normal_impl<float>(y, n, seed, counter, mean, std);
}
extern "C" __global__ void normal_f64(double* y, i64 n, u64 seed, u64 counter, double mean, double std) {
    normal_impl<double>(y, n, seed, counter, mean, std);
}
