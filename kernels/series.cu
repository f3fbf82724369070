// The elementwise steps of the convolution exponential's series on a batch
// of images (`img` values each), with a per-image mask (1: the image is still
// summing terms, 0: it stopped), so images with different numbers of terms
// share the launches. The convolutions themselves are conv.cu's.

template <typename T>
__device__ __forceinline__ void scale_impl(T* u, i64 n, double s) {
    FT_GRID_LOOP(i, n) { u[i] = u[i] * (T)s; }
}
extern "C" __global__ void series_scale_f32(float* u, i64 n, double s) { scale_impl<float>(u, n, s); }
extern "C" __global__ void series_scale_f64(double* u, i64 n, double s) { scale_impl<double>(u, n, s); }

// y += u where the image is active
template <typename T>
__device__ __forceinline__ void add_masked_impl(T* y, const T* u, const T* mask, i64 img, i64 n) {
    FT_GRID_LOOP(i, n) {
        if (mask[i / img] != T(0)) {
            y[i] = y[i] + u[i];
        }
    }
}
extern "C" __global__ void series_add_masked_f32(float* y, const float* u, const float* mask, i64 img, i64 n) {
    add_masked_impl<float>(y, u, mask, img, n);
}
extern "C" __global__ void series_add_masked_f64(double* y, const double* u, const double* mask, i64 img,
                                                 i64 n) {
    add_masked_impl<double>(y, u, mask, img, n);
}

// the adjoint recursion a <- g + t / i where the image is active
template <typename T>
__device__ __forceinline__ void step_impl(T* a, const T* g, const T* t, const T* mask, i64 img, i64 n,
                                          double inv_i) {
    FT_GRID_LOOP(k, n) {
        if (mask[k / img] != T(0)) {
            a[k] = g[k] + t[k] * (T)inv_i;
        }
    }
}
extern "C" __global__ void series_step_f32(float* a, const float* g, const float* t, const float* mask, i64 img,
                                           i64 n, double inv_i) {
    step_impl<float>(a, g, t, mask, img, n, inv_i);
}
extern "C" __global__ void series_step_f64(double* a, const double* g, const double* t, const double* mask,
                                           i64 img, i64 n, double inv_i) {
    step_impl<double>(a, g, t, mask, img, n, inv_i);
}

// dst = a / i where the image is active, else 0 (the second operands of the
// kernel gradient)
template <typename T>
__device__ __forceinline__ void scaled_impl(T* dst, const T* a, const T* mask, i64 img, i64 n, double inv_i) {
    FT_GRID_LOOP(k, n) { dst[k] = mask[k / img] != T(0) ? a[k] * (T)inv_i : T(0); }
}
extern "C" __global__ void series_scaled_f32(float* dst, const float* a, const float* mask, i64 img, i64 n,
                                             double inv_i) {
    scaled_impl<float>(dst, a, mask, img, n, inv_i);
}
extern "C" __global__ void series_scaled_f64(double* dst, const double* a, const double* mask, i64 img, i64 n,
                                             double inv_i) {
    scaled_impl<double>(dst, a, mask, img, n, inv_i);
}
