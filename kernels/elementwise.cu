// Elementwise kernels over strided operands (any strides: negative, zero for
// broadcast dimensions), writing contiguous results: unary functions, binary
// arithmetic, comparisons, `where`, casts, copies between strided views, and
// fills. One thread per element in a grid-stride loop.
//
// Operation codes (the order of flowtensor's ops::kinds enums):
// unary: 0 neg, 1 exp, 2 log, 3 log1p, 4 sqrt, 5 abs, 6 square, 7 tanh,
//        8 sigmoid, 9 log_sigmoid, 10 softplus, 11 relu, 12 silu,
//        13 powf(p0), 14 affine(x * p0 + p1), 15 clamp(p0, p1);
// binary: 0 add, 1 sub, 2 mul, 3 div, 4 where_positive (a where b > 0, else 0);
// compare: 0 eq, 1 ne, 2 lt, 3 le, 4 gt, 5 ge.

template <typename T>
__device__ __forceinline__ T ft_sigmoid(T x) {
    if (x >= T(0)) {
        return T(1) / (T(1) + ft_exp(-x));
    }
    T e = ft_exp(x);
    return e / (T(1) + e);
}

template <typename T>
__device__ __forceinline__ T ft_unary(int op, T x, T p0, T p1) {
    switch (op) {
        case 0: return -x;
        case 1: return ft_exp(x);
        case 2: return ft_log(x);
        case 3: return ft_log1p(x);
        case 4: return ft_sqrt(x);
        case 5: return ft_abs(x);
        case 6: return x * x;
        case 7: return ft_tanh(x);
        case 8: return ft_sigmoid(x);
        case 9: return ft_min(x, T(0)) - ft_log1p(ft_exp(-ft_abs(x)));
        case 10: return ft_max(x, T(0)) + ft_log1p(ft_exp(-ft_abs(x)));
        case 11: return ft_max(x, T(0));
        case 12: return x * ft_sigmoid(x);
        case 13: return ft_pow(x, p0);
        case 14: return x * p0 + p1;
        default: return ft_min(ft_max(x, p0), p1);
    }
}

template <typename T>
__device__ __forceinline__ void unary_impl(const T* x, FtLayout lx, T* y, i64 n, int op, double p0,
                                           double p1) {
    FT_GRID_LOOP(i, n) { y[i] = ft_unary<T>(op, x[ft_offset(lx, i)], T(p0), T(p1)); }
}

extern "C" __global__ void unary_f32(const float* x, FtLayout lx, float* y, i64 n, int op, double p0,
                                     double p1) {
    unary_impl<float>(x, lx, y, n, op, p0, p1);
}
extern "C" __global__ void unary_f64(const double* x, FtLayout lx, double* y, i64 n, int op, double p0,
                                     double p1) {
    unary_impl<double>(x, lx, y, n, op, p0, p1);
}

template <typename T>
__device__ __forceinline__ T ft_binary(int op, T a, T b) {
    switch (op) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        case 3: return a / b;
        default: return b > T(0) ? a : T(0);
    }
}

template <typename T>
__device__ __forceinline__ void binary_impl(const T* a, FtLayout la, const T* b, FtLayout lb, T* y, i64 n,
                                            int op) {
    FT_GRID_LOOP(i, n) { y[i] = ft_binary<T>(op, a[ft_offset(la, i)], b[ft_offset(lb, i)]); }
}

extern "C" __global__ void binary_f32(const float* a, FtLayout la, const float* b, FtLayout lb, float* y,
                                      i64 n, int op) {
    binary_impl<float>(a, la, b, lb, y, n, op);
}
extern "C" __global__ void binary_f64(const double* a, FtLayout la, const double* b, FtLayout lb,
                                      double* y, i64 n, int op) {
    binary_impl<double>(a, la, b, lb, y, n, op);
}

template <typename T>
__device__ __forceinline__ bool ft_compare(int op, T a, T b) {
    switch (op) {
        case 0: return a == b;
        case 1: return a != b;
        case 2: return a < b;
        case 3: return a <= b;
        case 4: return a > b;
        default: return a >= b;
    }
}

template <typename T>
__device__ __forceinline__ void compare_impl(const T* a, FtLayout la, const T* b, FtLayout lb, T* y,
                                             i64 n, int op) {
    FT_GRID_LOOP(i, n) {
        y[i] = ft_compare<T>(op, a[ft_offset(la, i)], b[ft_offset(lb, i)]) ? T(1) : T(0);
    }
}

extern "C" __global__ void compare_f32(const float* a, FtLayout la, const float* b, FtLayout lb, float* y,
                                       i64 n, int op) {
    compare_impl<float>(a, la, b, lb, y, n, op);
}
extern "C" __global__ void compare_f64(const double* a, FtLayout la, const double* b, FtLayout lb,
                                       double* y, i64 n, int op) {
    compare_impl<double>(a, la, b, lb, y, n, op);
}

template <typename T>
__device__ __forceinline__ void where_impl(const T* m, FtLayout lm, const T* t, FtLayout lt, const T* f,
                                           FtLayout lf, T* y, i64 n) {
    FT_GRID_LOOP(i, n) {
        y[i] = m[ft_offset(lm, i)] != T(0) ? t[ft_offset(lt, i)] : f[ft_offset(lf, i)];
    }
}

extern "C" __global__ void where_f32(const float* m, FtLayout lm, const float* t, FtLayout lt,
                                     const float* f, FtLayout lf, float* y, i64 n) {
    where_impl<float>(m, lm, t, lt, f, lf, y, n);
}
extern "C" __global__ void where_f64(const double* m, FtLayout lm, const double* t, FtLayout lt,
                                     const double* f, FtLayout lf, double* y, i64 n) {
    where_impl<double>(m, lm, t, lt, f, lf, y, n);
}

// Copies between strided views of the same element count (the destination
// view may start anywhere in its buffer: cat and set_data write into place).
template <typename S, typename D>
__device__ __forceinline__ void copy_impl(const S* x, FtLayout lx, D* y, FtLayout ly, i64 n) {
    FT_GRID_LOOP(i, n) { y[ft_offset(ly, i)] = (D)x[ft_offset(lx, i)]; }
}

extern "C" __global__ void copy_f32(const float* x, FtLayout lx, float* y, FtLayout ly, i64 n) {
    copy_impl<float, float>(x, lx, y, ly, n);
}
extern "C" __global__ void copy_f64(const double* x, FtLayout lx, double* y, FtLayout ly, i64 n) {
    copy_impl<double, double>(x, lx, y, ly, n);
}
extern "C" __global__ void cast_f32_f64(const float* x, FtLayout lx, double* y, FtLayout ly, i64 n) {
    copy_impl<float, double>(x, lx, y, ly, n);
}
extern "C" __global__ void cast_f64_f32(const double* x, FtLayout lx, float* y, FtLayout ly, i64 n) {
    copy_impl<double, float>(x, lx, y, ly, n);
}

extern "C" __global__ void fill_f32(float* y, i64 n, double value) {
    FT_GRID_LOOP(i, n) { y[i] = (float)value; }
}
extern "C" __global__ void fill_f64(double* y, i64 n, double value) {
    FT_GRID_LOOP(i, n) { y[i] = value; }
}
