// Shared by every kernel module (the backend prepends it to each module's
// source before NVRTC compiles it; the CPU emulation includes it).
//
// Layouts: a strided view of at most FT_MAX_RANK dimensions, passed by value.
// Element `i` of a view (row-major over `shape`) sits at
// `offset + sum_d index_d(i) * strides[d]` (strides in elements, may be
// negative or zero).

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;

#define FT_MAX_RANK 8

struct FtLayout {
    int rank;
    int reserved;
    i64 offset;
    i64 shape[FT_MAX_RANK];
    i64 strides[FT_MAX_RANK];
};

// The storage position of element `i` (row-major) of layout `l`.
__device__ __forceinline__ i64 ft_offset(const FtLayout& l, i64 i) {
    i64 at = l.offset;
    for (int d = l.rank - 1; d >= 0; --d) {
        i64 n = l.shape[d];
        at += (i % n) * l.strides[d];
        i /= n;
    }
    return at;
}

// A grid-stride loop over `n` elements.
#define FT_GRID_LOOP(i, n)                                                            \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                \
         i += (i64)blockDim.x * gridDim.x)

// Threads per block of the one-dimensional kernels.
#define FT_THREADS 256

// Math by precision (explicit, so float data never goes through double).
__device__ __forceinline__ float ft_exp(float x) { return expf(x); }
__device__ __forceinline__ double ft_exp(double x) { return exp(x); }
__device__ __forceinline__ float ft_log(float x) { return logf(x); }
__device__ __forceinline__ double ft_log(double x) { return log(x); }
__device__ __forceinline__ float ft_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double ft_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float ft_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double ft_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float ft_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double ft_abs(double x) { return fabs(x); }
__device__ __forceinline__ float ft_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double ft_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float ft_pow(float x, float p) { return powf(x, p); }
__device__ __forceinline__ double ft_pow(double x, double p) { return pow(x, p); }
__device__ __forceinline__ float ft_sin(float x) { return sinf(x); }
__device__ __forceinline__ double ft_sin(double x) { return sin(x); }
__device__ __forceinline__ float ft_cos(float x) { return cosf(x); }
__device__ __forceinline__ double ft_cos(double x) { return cos(x); }
// max and min that return the other operand for one NaN (as Rust's f32::max)
__device__ __forceinline__ float ft_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double ft_max(double a, double b) { return fmax(a, b); }
__device__ __forceinline__ float ft_min(float a, float b) { return fminf(a, b); }
__device__ __forceinline__ double ft_min(double a, double b) { return fmin(a, b); }
template <typename T>
__device__ __forceinline__ bool ft_isnan(T x) {
    return x != x;
}
