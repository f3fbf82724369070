// Reductions over chosen dimensions: output `o` folds the elements
// `x[at(kept, o) + at(reduced, r)]` for `r` in `0..nred` (the host splits the
// input layout into the kept and the reduced dimensions). Deterministic: every
// output is folded in one fixed order (no atomics), so two runs agree bit for
// bit.
//
// op: 0 sum, 1 max, 2 min (max and min propagate NaN, as the CPU backend).

template <typename T>
__device__ __forceinline__ T ft_identity(int op) {
    if (op == 0) {
        return T(0);
    }
    T inf = T(1) / T(0);
    return op == 1 ? -inf : inf;
}

template <typename T>
__device__ __forceinline__ T ft_fold(int op, T acc, T x) {
    if (op == 0) {
        return acc + x;
    }
    if (ft_isnan(x)) {
        return x;
    }
    if (op == 1) {
        return x > acc ? x : acc;
    }
    return x < acc ? x : acc;
}

// One thread per output, folding in order: for short reductions.
template <typename T>
__device__ __forceinline__ void reduce_thread_impl(const T* x, FtLayout kept, FtLayout reduced, T* y,
                                                   i64 nout, i64 nred, int op) {
    FT_GRID_LOOP(o, nout) {
        i64 base = ft_offset(kept, o);
        T acc = ft_identity<T>(op);
        for (i64 r = 0; r < nred; ++r) {
            acc = ft_fold<T>(op, acc, x[base + ft_offset(reduced, r)]);
        }
        y[o] = acc;
    }
}

extern "C" __global__ void reduce_thread_f32(const float* x, FtLayout kept, FtLayout reduced, float* y,
                                             i64 nout, i64 nred, int op) {
    reduce_thread_impl<float>(x, kept, reduced, y, nout, nred, op);
}
extern "C" __global__ void reduce_thread_f64(const double* x, FtLayout kept, FtLayout reduced, double* y,
                                             i64 nout, i64 nred, int op) {
    reduce_thread_impl<double>(x, kept, reduced, y, nout, nred, op);
}

// One block of FT_THREADS threads per output: each thread folds a strided
// share in order, then a tree in shared memory combines the partials.
template <typename T>
__device__ __forceinline__ void reduce_block_impl(const T* x, FtLayout kept, FtLayout reduced, T* y,
                                                  i64 nout, i64 nred, int op, T* partial) {
    int tid = threadIdx.x;
    for (i64 o = blockIdx.x; o < nout; o += gridDim.x) {
        i64 base = ft_offset(kept, o);
        T acc = ft_identity<T>(op);
        for (i64 r = tid; r < nred; r += FT_THREADS) {
            acc = ft_fold<T>(op, acc, x[base + ft_offset(reduced, r)]);
        }
        partial[tid] = acc;
        __syncthreads();
        for (int s = FT_THREADS / 2; s > 0; s >>= 1) {
            if (tid < s) {
                partial[tid] = ft_fold<T>(op, partial[tid], partial[tid + s]);
            }
            __syncthreads();
        }
        if (tid == 0) {
            y[o] = partial[0];
        }
        __syncthreads();
    }
}

extern "C" __global__ void reduce_block_f32(const float* x, FtLayout kept, FtLayout reduced, float* y,
                                            i64 nout, i64 nred, int op) {
    __shared__ float partial[FT_THREADS];
    reduce_block_impl<float>(x, kept, reduced, y, nout, nred, op, partial);
}
extern "C" __global__ void reduce_block_f64(const double* x, FtLayout kept, FtLayout reduced, double* y,
                                            i64 nout, i64 nred, int op) {
    __shared__ double partial[FT_THREADS];
    reduce_block_impl<double>(x, kept, reduced, y, nout, nred, op, partial);
}
