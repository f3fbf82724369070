// Gathers and scatters along one dimension with an index list in device
// memory: index_select (`y[..., j, ...] = x[..., idx[j], ...]`) and its
// adjoint index_add (`y[..., k, ...] = sum_{j : idx[j] = k} g[..., j, ...]`,
// the sum taken in increasing `j` for every output, so it is deterministic
// and equals the CPU backend's). Outputs are contiguous; `out` carries their
// shape.

template <typename T>
__device__ __forceinline__ void index_select_impl(const T* x, FtLayout lx, const i64* idx, int dim, T* y,
                                                  FtLayout out, i64 n) {
    FT_GRID_LOOP(i, n) {
        i64 at = lx.offset;
        i64 rest = i;
        for (int d = out.rank - 1; d >= 0; --d) {
            i64 c = rest % out.shape[d];
            rest /= out.shape[d];
            at += (d == dim ? idx[c] : c) * lx.strides[d];
        }
        y[i] = x[at];
    }
}

extern "C" __global__ void index_select_f32(const float* x, FtLayout lx, const i64* idx, int dim,
                                            float* y, FtLayout out, i64 n) {
    index_select_impl<float>(x, lx, idx, dim, y, out, n);
}
extern "C" __global__ void index_select_f64(const double* x, FtLayout lx, const i64* idx, int dim,
                                            double* y, FtLayout out, i64 n) {
    index_select_impl<double>(x, lx, idx, dim, y, out, n);
}

template <typename T>
__device__ __forceinline__ void index_add_impl(const T* g, FtLayout lg, const i64* idx, i64 nidx, int dim,
                                               T* y, FtLayout out, i64 n) {
    FT_GRID_LOOP(i, n) {
        // the output's coordinates; `k` along `dim`
        i64 base = lg.offset;
        i64 k = 0;
        i64 rest = i;
        for (int d = out.rank - 1; d >= 0; --d) {
            i64 c = rest % out.shape[d];
            rest /= out.shape[d];
            if (d == dim) {
                k = c;
            } else {
                base += c * lg.strides[d];
            }
        }
        T acc = T(0);
        for (i64 j = 0; j < nidx; ++j) {
            if (idx[j] == k) {
                acc += g[base + j * lg.strides[dim]];
            }
        }
        y[i] = acc;
    }
}

extern "C" __global__ void index_add_f32(const float* g, FtLayout lg, const i64* idx, i64 nidx, int dim,
                                         float* y, FtLayout out, i64 n) {
    index_add_impl<float>(g, lg, idx, nidx, dim, y, out, n);
}
extern "C" __global__ void index_add_f64(const double* g, FtLayout lg, const i64* idx, i64 nidx, int dim,
                                         double* y, FtLayout out, i64 n) {
    index_add_impl<double>(g, lg, idx, nidx, dim, y, out, n);
}
