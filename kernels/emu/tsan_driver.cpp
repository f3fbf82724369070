// The ThreadSanitizer driver of the CUDA emulation (run by .ci/tsan).
//
// Built with -fsanitize=thread and run with FT_EMU_THREADS=1, so that every
// CUDA thread of a block is an OS thread: a missing __syncthreads() between a
// write to shared memory and another thread's read of it is a data race that
// ThreadSanitizer reports. The driver launches every kernel that synchronises
// its threads (the tiled matmul, the block reductions, the 3x3 convolution,
// the weight gradient's tree, the triangular solve's diagonal sweep) and a
// few grid-stride kernels through the same ft_emu_launch entry point the Rust
// backend uses, on shapes that leave partial tiles and idle threads, and
// checks each result against a plain loop (f64, relative 1e-12).
//
// `tsan_driver --race` launches a kernel with a deliberately missing barrier
// instead: the CI script expects ThreadSanitizer to report it, which proves
// that the sanitizer sees the emulated threads at all.

#include "emu_runtime.h"
#include "common.cuh"
#include "conv.cu"
#include "elementwise.cu"
#include "matmul.cu"
#include "reduce.cu"
#include "solve.cu"

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

// A block sum whose threads read their neighbours' shared slots without a barrier.
extern "C" __global__ void racy_block_sum(const double* x, double* y) {
    __shared__ double partial[64];
    partial[threadIdx.x] = x[threadIdx.x];
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (int i = 0; i < 64; ++i) s += partial[i];
        y[0] = s;
    }
}

extern "C" void ft_emu_register_all() {
    FT_EMU_REGISTER(matmul_f64, true)
    FT_EMU_REGISTER(reduce_block_f64, true)
    FT_EMU_REGISTER(reduce_thread_f64, false)
    FT_EMU_REGISTER(conv_fwd_3x3_f64, true)
    FT_EMU_REGISTER(conv_bwd_weight_f64, true)
    FT_EMU_REGISTER(conv_bwd_data_f64, false)
    FT_EMU_REGISTER(quadrant_solve_f64, true)
    FT_EMU_REGISTER(binary_f64, false)
    FT_EMU_REGISTER(racy_block_sum, true)
}

namespace {

int failures = 0;

std::vector<double> random_values(std::size_t n, unsigned seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::vector<double> v(n);
    for (auto& x : v) x = normal(rng);
    return v;
}

void check(const char* what, const std::vector<double>& got, const std::vector<double>& want) {
    double worst = 0.0;
    for (std::size_t i = 0; i < want.size(); ++i) {
        double err = std::fabs(got[i] - want[i]) / std::max(1.0, std::fabs(want[i]));
        worst = std::max(worst, err);
    }
    bool ok = worst <= 1e-12 && got.size() == want.size();
    std::printf("%-22s %zu values, max relative error %.2e  %s\n", what, want.size(), worst,
                ok ? "ok" : "FAILED");
    failures += ok ? 0 : 1;
}

void launch(const char* name, dim3 grid, dim3 block, std::vector<void*> params) {
    unsigned g[3] = {grid.x, grid.y, grid.z}, b[3] = {block.x, block.y, block.z};
    int rc = ft_emu_launch(name, g, b, params.data());
    if (rc != 0) {
        std::printf("%s: launch failed with code %d\n", name, rc);
        ++failures;
    }
}

FtLayout contiguous(std::initializer_list<i64> shape) {
    FtLayout l{};
    l.rank = static_cast<int>(shape.size());
    int d = 0;
    for (i64 s : shape) l.shape[d++] = s;
    i64 stride = 1;
    for (int k = l.rank - 1; k >= 0; --k) {
        l.strides[k] = stride;
        stride *= l.shape[k];
    }
    return l;
}

unsigned blocks_for(i64 n, i64 per_block) { return static_cast<unsigned>((n + per_block - 1) / per_block); }

void matmul() {
    i64 batch = 2, m = 37, n = 29, k = 45;
    auto a = random_values(batch * m * k, 1), b = random_values(batch * k * n, 2);
    std::vector<double> c(batch * m * n), want(batch * m * n, 0.0);
    for (i64 bi = 0; bi < batch; ++bi)
        for (i64 i = 0; i < m; ++i)
            for (i64 j = 0; j < n; ++j) {
                double s = 0.0;
                for (i64 q = 0; q < k; ++q) s += a[(bi * m + i) * k + q] * b[(bi * k + q) * n + j];
                want[(bi * m + i) * n + j] = s;
            }
    FtLayout ba = contiguous({batch}), bb = contiguous({batch});
    ba.strides[0] = m * k;
    bb.strides[0] = k * n;
    i64 a_rs = k, a_cs = 1, b_rs = n, b_cs = 1;
    const double *pa = a.data(), *pb = b.data();
    double* pc = c.data();
    launch("matmul_f64", dim3{blocks_for(n, MM_TILE), blocks_for(m, MM_TILE), 1}, dim3{MM_TILE, MM_TILE, 1},
           {&pa, &ba, &a_rs, &a_cs, &pb, &bb, &b_rs, &b_cs, &pc, &batch, &m, &n, &k});
    check("matmul_f64", c, want);
}

void reductions() {
    i64 nout = 3, nred = 1000;
    auto x = random_values(nout * nred, 3);
    FtLayout kept = contiguous({nout}), reduced = contiguous({nred});
    kept.strides[0] = nred;
    for (int op = 0; op < 3; ++op) {
        std::vector<double> want(nout);
        for (i64 o = 0; o < nout; ++o) {
            double acc = op == 0 ? 0.0 : (op == 1 ? -INFINITY : INFINITY);
            for (i64 r = 0; r < nred; ++r) {
                double v = x[o * nred + r];
                acc = op == 0 ? acc + v : (op == 1 ? std::max(acc, v) : std::min(acc, v));
            }
            want[o] = acc;
        }
        for (const char* kernel : {"reduce_block_f64", "reduce_thread_f64"}) {
            std::vector<double> y(nout);
            const double* px = x.data();
            double* py = y.data();
            bool block = std::strcmp(kernel, "reduce_block_f64") == 0;
            launch(kernel, dim3{block ? 2u : 1u, 1, 1}, dim3{block ? FT_THREADS : 64u, 1, 1},
                   {&px, &kept, &reduced, &py, &nout, &nred, &op});
            // sums fold in a different order than the loop; max and min are exact
            std::string what = std::string(kernel) + (op == 0 ? " sum" : op == 1 ? " max" : " min");
            check(what.c_str(), y, want);
        }
    }
}

ConvParams conv_geometry(i64 n, i64 c, i64 o, i64 h, i64 w) {
    ConvParams g{};
    g.n = n, g.c = c, g.h = h, g.w = w, g.o = o, g.ho = h, g.wo = w, g.kh = 3, g.kw = 3;
    g.sh = g.sw = 1, g.ph = g.pw = 1, g.dh = g.dw = 1, g.groups = 1;
    return g;
}

// The reference convolution (stride 1, padding 1, 3x3) by plain loops.
std::vector<double> conv_reference(const std::vector<double>& x, const std::vector<double>& w, ConvParams g) {
    std::vector<double> y(g.n * g.o * g.h * g.w, 0.0);
    for (i64 n = 0; n < g.n; ++n)
        for (i64 o = 0; o < g.o; ++o)
            for (i64 p = 0; p < g.h; ++p)
                for (i64 q = 0; q < g.w; ++q) {
                    double s = 0.0;
                    for (i64 c = 0; c < g.c; ++c)
                        for (i64 a = 0; a < 3; ++a)
                            for (i64 b = 0; b < 3; ++b) {
                                i64 ih = p + a - 1, iw = q + b - 1;
                                if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
                                s += w[((o * g.c + c) * 3 + a) * 3 + b] * x[((n * g.c + c) * g.h + ih) * g.w + iw];
                            }
                    y[((n * g.o + o) * g.h + p) * g.w + q] = s;
                }
    return y;
}

void convolutions() {
    ConvParams g = conv_geometry(2, 3, 4, 11, 13);
    auto x = random_values(g.n * g.c * g.h * g.w, 4), w = random_values(g.o * g.c * 9, 5);
    auto dy = random_values(g.n * g.o * g.h * g.w, 6);
    const double *px = x.data(), *pw = w.data(), *pdy = dy.data();
    for (unsigned side : {8u, 16u}) {
        std::vector<double> y(g.n * g.o * g.h * g.w);
        double* py = y.data();
        launch("conv_fwd_3x3_f64",
               dim3{blocks_for(g.wo, side), blocks_for(g.ho, side), static_cast<unsigned>(g.n * g.o)},
               dim3{side, side, 1}, {&px, &pw, &py, &g});
        check(side == 8 ? "conv_fwd_3x3_f64 T=8" : "conv_fwd_3x3_f64 T=16", y, conv_reference(x, w, g));
    }
    // the weight gradient: dw[o, c, a, b] = sum_{n, p, q} dy[n, o, p, q] x[n, c, p + a - 1, q + b - 1]
    std::vector<double> dw(g.o * g.c * 9), want_dw(g.o * g.c * 9, 0.0);
    for (i64 o = 0; o < g.o; ++o)
        for (i64 c = 0; c < g.c; ++c)
            for (i64 a = 0; a < 3; ++a)
                for (i64 b = 0; b < 3; ++b) {
                    double s = 0.0;
                    for (i64 n = 0; n < g.n; ++n)
                        for (i64 p = 0; p < g.h; ++p)
                            for (i64 q = 0; q < g.w; ++q) {
                                i64 ih = p + a - 1, iw = q + b - 1;
                                if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
                                s += dy[((n * g.o + o) * g.h + p) * g.w + q] * x[((n * g.c + c) * g.h + ih) * g.w + iw];
                            }
                    want_dw[((o * g.c + c) * 3 + a) * 3 + b] = s;
                }
    double* pdw = dw.data();
    launch("conv_bwd_weight_f64", dim3{40, 1, 1}, dim3{FT_THREADS, 1, 1}, {&px, &pdy, &pdw, &g});
    check("conv_bwd_weight_f64", dw, want_dw);
    // the data gradient is the adjoint: <conv(x), dy> = <x, conv_bwd_data(dy)>
    std::vector<double> dx(x.size());
    double* pdx = dx.data();
    i64 total = g.n * g.c * g.h * g.w;
    launch("conv_bwd_data_f64", dim3{3, 1, 1}, dim3{FT_THREADS, 1, 1}, {&pdy, &pw, &pdx, &g});
    auto y = conv_reference(x, w, g);
    double lhs = 0.0, rhs = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) lhs += y[i] * dy[i];
    for (i64 i = 0; i < total; ++i) rhs += x[i] * dx[i];
    check("conv_bwd_data_f64 <.,.>", {rhs}, {lhs});
}

void triangular_solve() {
    i64 n = 2, c = 3, h = 7, w = 9;
    auto x = random_values(n * c * h * w, 7);
    auto k = random_values(c * c * 9, 8);
    // an upper-left-quadrant kernel with a lower-triangular, well-conditioned centre
    for (i64 o = 0; o < c; ++o)
        for (i64 ci = 0; ci < c; ++ci) {
            double* kk = &k[(o * c + ci) * 9];
            kk[2] = kk[5] = kk[6] = kk[7] = kk[8] = 0.0;
            if (ci > o) kk[4] = 0.0;
            if (ci == o) kk[4] = 2.0 + std::fabs(kk[4]);
        }
    ConvParams g = conv_geometry(n, c, c, h, w);
    auto y = conv_reference(x, k, g);
    std::vector<double> solved(x.size());
    const double *py = y.data(), *pk = k.data();
    double* ps = solved.data();
    launch("quadrant_solve_f64", dim3{2, 1, 1}, dim3{4, 1, 1}, {&py, &pk, &ps, &n, &c, &h, &w});
    check("quadrant_solve_f64", solved, x);
}

void broadcasting_binary() {
    // a (5, 7) matrix plus a row broadcast along dim 0 (stride 0), written in a grid-stride loop
    i64 rows = 5, cols = 7, total = rows * cols;
    auto a = random_values(total, 9), b = random_values(cols, 10);
    FtLayout la = contiguous({rows, cols}), lb = contiguous({rows, cols});
    lb.strides[0] = 0;
    std::vector<double> y(total), want(total);
    for (i64 i = 0; i < total; ++i) want[i] = a[i] + b[i % cols];
    const double *pa = a.data(), *pb = b.data();
    double* py = y.data();
    int op = 0;  // add
    launch("binary_f64", dim3{2, 1, 1}, dim3{8, 1, 1}, {&pa, &la, &pb, &lb, &py, &total, &op});
    check("binary_f64 broadcast", y, want);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && std::string(argv[1]) == "--race") {
        auto x = random_values(64, 11);
        std::vector<double> y(1);
        const double* px = x.data();
        double* py = y.data();
        launch("racy_block_sum", dim3{1, 1, 1}, dim3{64, 1, 1}, {&px, &py});
        std::printf("racy_block_sum ran (ThreadSanitizer should have reported a race)\n");
        return 0;
    }
    matmul();
    reductions();
    convolutions();
    triangular_solve();
    broadcasting_binary();
    if (failures > 0) {
        std::printf("%d check(s) failed\n", failures);
        return 1;
    }
    std::printf("all emulated kernels agree with their references\n");
    return 0;
}
