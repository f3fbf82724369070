// Scans and data-dependent indexing, on strided operands (element `i` of a
// view in row-major order sits at ft_offset(layout, i)); shapes are split at
// the dimension into (outer, len, inner). Index values are whole numbers
// stored in the data's float type, checked on the host side before a launch.
// Every sum runs in the CPU backend's order, so results agree bit for bit.
//
// - cumsum: one thread per (outer, inner) line, summing along it in order;
// - gather: one thread per output element, y[o, j, r] = x[o, index[o, j, r], r];
// - scatter_add (gather's adjoint): one thread per output slot (o, k, r),
//   summing, in increasing j, the g[o, j, r] whose index is k (no atomics);
// - searchsorted: one thread per value, a binary search of its row.

template <typename T>
__device__ __forceinline__ void cumsum_impl(const T* x, FtLayout lx, T* y, i64 outer, i64 len, i64 inner) {
    FT_GRID_LOOP(t, outer * inner) {
        i64 o = t / inner, r = t % inner;
        T acc = T(0);
        for (i64 j = 0; j < len; ++j) {
            i64 at = (o * len + j) * inner + r;
            acc = j == 0 ? x[ft_offset(lx, at)] : acc + x[ft_offset(lx, at)];
            y[at] = acc;
        }
    }
}

extern "C" __global__ void cumsum_f32(const float* x, FtLayout lx, float* y, i64 outer, i64 len, i64 inner) {
    cumsum_impl<float>(x, lx, y, outer, len, inner);
}
extern "C" __global__ void cumsum_f64(const double* x, FtLayout lx, double* y, i64 outer, i64 len,
                                      i64 inner) {
    cumsum_impl<double>(x, lx, y, outer, len, inner);
}

template <typename T>
__device__ __forceinline__ void gather_impl(const T* x, FtLayout lx, const T* index, FtLayout li, T* y,
                                            i64 outer, i64 len, i64 taken, i64 inner) {
    FT_GRID_LOOP(i, outer * taken * inner) {
        i64 r = i % inner, o = i / (taken * inner);
        i64 k = (i64)index[ft_offset(li, i)];
        y[i] = x[ft_offset(lx, (o * len + k) * inner + r)];
    }
}

extern "C" __global__ void gather_f32(const float* x, FtLayout lx, const float* index, FtLayout li, float* y,
                                      i64 outer, i64 len, i64 taken, i64 inner) {
    gather_impl<float>(x, lx, index, li, y, outer, len, taken, inner);
}
extern "C" __global__ void gather_f64(const double* x, FtLayout lx, const double* index, FtLayout li,
                                      double* y, i64 outer, i64 len, i64 taken, i64 inner) {
    gather_impl<double>(x, lx, index, li, y, outer, len, taken, inner);
}

template <typename T>
__device__ __forceinline__ void scatter_add_impl(const T* g, FtLayout lg, const T* index, FtLayout li, T* y,
                                                 i64 outer, i64 len, i64 size, i64 inner) {
    FT_GRID_LOOP(i, outer * size * inner) {
        i64 r = i % inner, k = i / inner % size, o = i / (size * inner);
        T acc = T(0);
        for (i64 j = 0; j < len; ++j) {
            i64 at = (o * len + j) * inner + r;
            if ((i64)index[ft_offset(li, at)] == k) {
                acc += g[ft_offset(lg, at)];
            }
        }
        y[i] = acc;
    }
}

extern "C" __global__ void scatter_add_f32(const float* g, FtLayout lg, const float* index, FtLayout li,
                                           float* y, i64 outer, i64 len, i64 size, i64 inner) {
    scatter_add_impl<float>(g, lg, index, li, y, outer, len, size, inner);
}
extern "C" __global__ void scatter_add_f64(const double* g, FtLayout lg, const double* index, FtLayout li,
                                           double* y, i64 outer, i64 len, i64 size, i64 inner) {
    scatter_add_impl<double>(g, lg, index, li, y, outer, len, size, inner);
}

// NaN values get k (they are below nothing), as on the CPU.
template <typename T>
__device__ __forceinline__ void searchsorted_impl(const T* sorted, FtLayout ls, const T* values, FtLayout lv,
                                                  T* y, i64 rows, i64 k, i64 m, int right) {
    FT_GRID_LOOP(i, rows * m) {
        i64 row = i / m;
        T x = values[ft_offset(lv, i)];
        i64 lo = 0, hi = k;
        if (ft_isnan(x)) {
            lo = k;
        }
        while (lo < hi) {
            i64 mid = (lo + hi) / 2;
            T a = sorted[ft_offset(ls, row * k + mid)];
            bool go_right = right ? (a <= x) : (a < x);
            if (go_right) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        y[i] = (T)lo;
    }
}

extern "C" __global__ void searchsorted_f32(const float* sorted, FtLayout ls, const float* values, FtLayout lv,
                                            float* y, i64 rows, i64 k, i64 m, int right) {
    searchsorted_impl<float>(sorted, ls, values, lv, y, rows, k, m, right);
}
extern "C" __global__ void searchsorted_f64(const double* sorted, FtLayout ls, const double* values,
                                            FtLayout lv, double* y, i64 rows, i64 k, i64 m, int right) {
    searchsorted_impl<double>(sorted, ls, values, lv, y, rows, k, m, right);
}
