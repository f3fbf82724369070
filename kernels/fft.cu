// Discrete Fourier transforms along one axis of complex data stored as
// interleaved (re, im) pairs, contiguous, viewed as `(outer, len, inner)`
// complex elements:
//
//   y[o, k, i] = scale * sum_n x[o, n, i] exp(-+2 pi i k n / len)
//
// (minus for the forward transform, plus for the inverse). A direct sum, one
// thread per output element, with the twiddle's angle reduced `k n mod len`
// first; the transforms of flows act on small images, where this costs less
// than a planned FFT's launches. Transforms over several axes apply this one
// axis at a time.

template <typename T>
__device__ __forceinline__ void dft_axis_impl(const T* x, T* y, i64 outer, i64 len, i64 inner, int inverse,
                                              double scale) {
    i64 total = outer * len * inner;
    const double tau = 6.283185307179586;
    double sign = inverse ? 1.0 : -1.0;
    FT_GRID_LOOP(e, total) {
        i64 i = e % inner, k = e / inner % len, o = e / (inner * len);
        double re = 0.0, im = 0.0;
        for (i64 n = 0; n < len; ++n) {
            i64 at = ((o * len + n) * inner + i) * 2;
            double angle = sign * tau * (double)((k * n) % len) / (double)len;
            double cr = cos(angle), ci = sin(angle);
            double xr = (double)x[at], xi = (double)x[at + 1];
            re += xr * cr - xi * ci;
            im += xr * ci + xi * cr;
        }
        y[e * 2] = (T)(re * scale);
        y[e * 2 + 1] = (T)(im * scale);
    }
}

extern "C" __global__ void dft_axis_f32(const float* x, float* y, i64 outer, i64 len, i64 inner, int inverse,
                                        double scale) {
    dft_axis_impl<float>(x, y, outer, len, inner, inverse, scale);
}
extern "C" __global__ void dft_axis_f64(const double* x, double* y, i64 outer, i64 len, i64 inner,
                                        int inverse, double scale) {
    dft_axis_impl<double>(x, y, outer, len, inner, inverse, scale);
}
