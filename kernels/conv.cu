// 2-D convolutions (NCHW images, OIHW weights) and their gradients, for any
// stride, zero padding, dilation and groups:
//
//   y[n, o, p, q] = sum_{c in group(o), i, j} w[o, c', i, j] x[n, c, p sh - ph + i dh, q sw - pw + j dw]
//
// - conv_fwd: one thread per output element (any geometry);
// - conv_fwd_3x3: stride 1, padding 1, 3x3 kernels: a block of T x T
//   threads (T = blockDim.x, 8 or 16: the host picks 8 for images of at most
//   8 x 8, so small images do not leave most threads idle) computes a T x T
//   tile of one output channel, staging the input tile and its halo in
//   shared memory channel by channel;
// - conv_bwd_data: the adjoint, one thread per input element, gathering the
//   outputs it contributed to (no atomics);
// - conv_bwd_weight: one block per weight element, its threads sharing the
//   (image, position) sum, combined by a tree in shared memory.
// - conv_epilogue: in place on a forward's output, the output channel's
//   bias added (when has_bias) and then ReLU (when relu; NaN gives 0, as the
//   elementwise relu), one thread per element.
// Every sum runs in a fixed order, so results are deterministic.

struct ConvParams {
    i64 n, c, h, w, o, ho, wo, kh, kw;
    i64 sh, sw, ph, pw, dh, dw, groups;
};

template <typename T>
__device__ __forceinline__ void conv_fwd_impl(const T* x, const T* w, T* y, ConvParams g) {
    i64 total = g.n * g.o * g.ho * g.wo;
    i64 cg = g.c / g.groups, og = g.o / g.groups;
    FT_GRID_LOOP(i, total) {
        i64 q = i % g.wo, p = i / g.wo % g.ho, o = i / (g.wo * g.ho) % g.o, n = i / (g.wo * g.ho * g.o);
        i64 c0 = o / og * cg;
        T acc = T(0);
        for (i64 cc = 0; cc < cg; ++cc) {
            const T* xc = x + ((n * g.c + c0 + cc) * g.h) * g.w;
            const T* wc = w + ((o * cg + cc) * g.kh) * g.kw;
            for (i64 a = 0; a < g.kh; ++a) {
                i64 ih = p * g.sh - g.ph + a * g.dh;
                if (ih < 0 || ih >= g.h) continue;
                for (i64 b = 0; b < g.kw; ++b) {
                    i64 iw = q * g.sw - g.pw + b * g.dw;
                    if (iw < 0 || iw >= g.w) continue;
                    acc += wc[a * g.kw + b] * xc[ih * g.w + iw];
                }
            }
        }
        y[i] = acc;
    }
}

extern "C" __global__ void conv_fwd_f32(const float* x, const float* w, float* y, ConvParams g) {
    conv_fwd_impl<float>(x, w, y, g);
}
extern "C" __global__ void conv_fwd_f64(const double* x, const double* w, double* y, ConvParams g) {
    conv_fwd_impl<double>(x, w, y, g);
}

#define C3_TILE 16

// grid: (ceil(wo / T), ceil(ho / T), n * o); block: (T, T), T <= C3_TILE.
template <typename T>
__device__ __forceinline__ void conv_fwd_3x3_impl(const T* x, const T* w, T* y, ConvParams g,
                                                  T (*tile)[C3_TILE + 2]) {
    int tx = threadIdx.x, ty = threadIdx.y;
    int side = blockDim.x;
    i64 q = (i64)blockIdx.x * side + tx;
    i64 p = (i64)blockIdx.y * side + ty;
    i64 cg = g.c / g.groups, og = g.o / g.groups;
    for (i64 no = blockIdx.z; no < g.n * g.o; no += gridDim.z) {
        i64 n = no / g.o, o = no % g.o;
        i64 c0 = o / og * cg;
        T acc = T(0);
        for (i64 cc = 0; cc < cg; ++cc) {
            const T* xc = x + ((n * g.c + c0 + cc) * g.h) * g.w;
            // the (T + 2)^2 input tile with its halo, loaded by the block's T^2 threads
            for (int s = ty * side + tx; s < (side + 2) * (side + 2); s += side * side) {
                int r = s / (side + 2), col = s % (side + 2);
                i64 ih = (i64)blockIdx.y * side + r - 1, iw = (i64)blockIdx.x * side + col - 1;
                tile[r][col] = (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) ? xc[ih * g.w + iw] : T(0);
            }
            __syncthreads();
            const T* wc = w + (o * cg + cc) * 9;
            for (int a = 0; a < 3; ++a) {
                for (int b = 0; b < 3; ++b) {
                    acc += wc[a * 3 + b] * tile[ty + a][tx + b];
                }
            }
            __syncthreads();
        }
        if (p < g.ho && q < g.wo) {
            y[((n * g.o + o) * g.ho + p) * g.wo + q] = acc;
        }
    }
}

extern "C" __global__ void conv_fwd_3x3_f32(const float* x, const float* w, float* y, ConvParams g) {
    __shared__ float tile[C3_TILE + 2][C3_TILE + 2];
    conv_fwd_3x3_impl<float>(x, w, y, g, tile);
}
extern "C" __global__ void conv_fwd_3x3_f64(const double* x, const double* w, double* y, ConvParams g) {
    __shared__ double tile[C3_TILE + 2][C3_TILE + 2];
    conv_fwd_3x3_impl<double>(x, w, y, g, tile);
}

template <typename T>
__device__ __forceinline__ void conv_bwd_data_impl(const T* dy, const T* w, T* dx, ConvParams g) {
    i64 total = g.n * g.c * g.h * g.w;
    i64 cg = g.c / g.groups, og = g.o / g.groups;
    FT_GRID_LOOP(i, total) {
        i64 iw = i % g.w, ih = i / g.w % g.h, c = i / (g.w * g.h) % g.c, n = i / (g.w * g.h * g.c);
        i64 grp = c / cg, cc = c % cg;
        T acc = T(0);
        for (i64 oo = 0; oo < og; ++oo) {
            i64 o = grp * og + oo;
            const T* dyo = dy + ((n * g.o + o) * g.ho) * g.wo;
            const T* wo = w + ((o * cg + cc) * g.kh) * g.kw;
            for (i64 a = 0; a < g.kh; ++a) {
                i64 num_h = ih + g.ph - a * g.dh;
                if (num_h < 0 || num_h % g.sh != 0) continue;
                i64 p = num_h / g.sh;
                if (p >= g.ho) continue;
                for (i64 b = 0; b < g.kw; ++b) {
                    i64 num_w = iw + g.pw - b * g.dw;
                    if (num_w < 0 || num_w % g.sw != 0) continue;
                    i64 q = num_w / g.sw;
                    if (q >= g.wo) continue;
                    acc += wo[a * g.kw + b] * dyo[p * g.wo + q];
                }
            }
        }
        dx[i] = acc;
    }
}

extern "C" __global__ void conv_bwd_data_f32(const float* dy, const float* w, float* dx, ConvParams g) {
    conv_bwd_data_impl<float>(dy, w, dx, g);
}
extern "C" __global__ void conv_bwd_data_f64(const double* dy, const double* w, double* dx, ConvParams g) {
    conv_bwd_data_impl<double>(dy, w, dx, g);
}

// grid: up to one block per weight element (grid-stride over them); block: FT_THREADS.
template <typename T>
__device__ __forceinline__ void conv_bwd_weight_impl(const T* x, const T* dy, T* dw, ConvParams g,
                                                     T* partial) {
    i64 cg = g.c / g.groups, og = g.o / g.groups;
    i64 nweights = g.o * cg * g.kh * g.kw;
    i64 positions = g.n * g.ho * g.wo;
    int tid = threadIdx.x;
    for (i64 e = blockIdx.x; e < nweights; e += gridDim.x) {
        i64 b = e % g.kw, a = e / g.kw % g.kh, cc = e / (g.kw * g.kh) % cg, o = e / (g.kw * g.kh * cg);
        i64 c = o / og * cg + cc;
        T acc = T(0);
        for (i64 s = tid; s < positions; s += FT_THREADS) {
            i64 q = s % g.wo, p = s / g.wo % g.ho, n = s / (g.wo * g.ho);
            i64 ih = p * g.sh - g.ph + a * g.dh, iw = q * g.sw - g.pw + b * g.dw;
            if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) {
                acc += dy[((n * g.o + o) * g.ho + p) * g.wo + q] * x[((n * g.c + c) * g.h + ih) * g.w + iw];
            }
        }
        partial[tid] = acc;
        __syncthreads();
        for (int half = FT_THREADS / 2; half > 0; half >>= 1) {
            if (tid < half) {
                partial[tid] += partial[tid + half];
            }
            __syncthreads();
        }
        if (tid == 0) {
            dw[e] = partial[0];
        }
        __syncthreads();
    }
}

extern "C" __global__ void conv_bwd_weight_f32(const float* x, const float* dy, float* dw, ConvParams g) {
    __shared__ float partial[FT_THREADS];
    conv_bwd_weight_impl<float>(x, dy, dw, g, partial);
}
extern "C" __global__ void conv_bwd_weight_f64(const double* x, const double* dy, double* dw, ConvParams g) {
    __shared__ double partial[FT_THREADS];
    conv_bwd_weight_impl<double>(x, dy, dw, g, partial);
}

// y[n, o, p] = act(y[n, o, p] + bias[o]) for y: (n, o, positions).
template <typename T>
__device__ __forceinline__ void conv_epilogue_impl(T* y, const T* bias, i64 total, i64 o,
                                                   i64 positions, int has_bias, int relu) {
    FT_GRID_LOOP(i, total) {
        T v = y[i];
        if (has_bias) v += bias[i / positions % o];
        if (relu) v = ft_max(v, T(0));
        y[i] = v;
    }
}

extern "C" __global__ void conv_epilogue_f32(float* y, const float* bias, i64 total, i64 o,
                                             i64 positions, int has_bias, int relu) {
    conv_epilogue_impl<float>(y, bias, total, o, positions, has_bias, relu);
}
extern "C" __global__ void conv_epilogue_f64(double* y, const double* bias, i64 total, i64 o,
                                             i64 positions, int has_bias, int relu) {
    conv_epilogue_impl<double>(y, bias, total, o, positions, has_bias, relu);
}
