// Batched matrix products `c[b] = a[b] @ b[b]` for strided operands (any
// row, column and batch strides: transposed and broadcast operands are read
// in place), `c` contiguous `(batch, m, n)`.
//
// Tiled in shared memory: a block of MM_TILE x MM_TILE threads computes an
// MM_TILE x MM_TILE tile of `c`, one element per thread, staging MM_TILE-wide
// slices of `a`'s rows and `b`'s columns in shared memory; every inner
// product is summed in increasing `k`, so results are deterministic. The
// batch index runs over blockIdx.z (and past gridDim.z in a loop).

#define MM_TILE 16

template <typename T>
__device__ __forceinline__ void matmul_impl(const T* a, FtLayout batch_a, i64 a_rs, i64 a_cs, const T* b,
                                            FtLayout batch_b, i64 b_rs, i64 b_cs, T* c, i64 batch, i64 m,
                                            i64 n, i64 k, T (*ta)[MM_TILE + 1], T (*tb)[MM_TILE + 1]) {
    int tx = threadIdx.x, ty = threadIdx.y;
    i64 row = (i64)blockIdx.y * MM_TILE + ty;
    i64 col = (i64)blockIdx.x * MM_TILE + tx;
    for (i64 bi = blockIdx.z; bi < batch; bi += gridDim.z) {
        const T* ab = a + ft_offset(batch_a, bi);
        const T* bb = b + ft_offset(batch_b, bi);
        T acc = T(0);
        for (i64 t = 0; t < k; t += MM_TILE) {
            i64 ka = t + tx, kb = t + ty;
            ta[ty][tx] = (row < m && ka < k) ? ab[row * a_rs + ka * a_cs] : T(0);
            tb[ty][tx] = (kb < k && col < n) ? bb[kb * b_rs + col * b_cs] : T(0);
            __syncthreads();
            for (int q = 0; q < MM_TILE; ++q) {
                acc += ta[ty][q] * tb[q][tx];
            }
            __syncthreads();
        }
        if (row < m && col < n) {
            c[(bi * m + row) * n + col] = acc;
        }
    }
}

extern "C" __global__ void matmul_f32(const float* a, FtLayout batch_a, i64 a_rs, i64 a_cs, const float* b,
                                      FtLayout batch_b, i64 b_rs, i64 b_cs, float* c, i64 batch, i64 m,
                                      i64 n, i64 k) {
    __shared__ float ta[MM_TILE][MM_TILE + 1];
    __shared__ float tb[MM_TILE][MM_TILE + 1];
    matmul_impl<float>(a, batch_a, a_rs, a_cs, b, batch_b, b_rs, b_cs, c, batch, m, n, k, ta, tb);
}
extern "C" __global__ void matmul_f64(const double* a, FtLayout batch_a, i64 a_rs, i64 a_cs,
                                      const double* b, FtLayout batch_b, i64 b_rs, i64 b_cs, double* c,
                                      i64 batch, i64 m, i64 n, i64 k) {
    __shared__ double ta[MM_TILE][MM_TILE + 1];
    __shared__ double tb[MM_TILE][MM_TILE + 1];
    matmul_impl<double>(a, batch_a, a_rs, a_cs, b, batch_b, b_rs, b_cs, c, batch, m, n, k, ta, tb);
}
