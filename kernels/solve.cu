// Triangular solves of convolutions whose Jacobian is triangular in raster
// order: `y = conv(x, K)` for x, with K `(C, C, 3, 3)` an upper-left-quadrant
// kernel (taps (-1,-1), (-1,0), (0,-1) and a lower-triangular centre), the
// inverse of the emerging convolution's first factor (the second is the same
// problem on images rotated by 180 degrees).
//
// One block per image. Pixel (i, j) depends only on pixels of earlier
// anti-diagonals i + j < d, so the block sweeps the anti-diagonals in order,
// its threads sharing the pixels of one diagonal, with a barrier between
// diagonals; within a pixel, channels are solved in order (forward
// substitution with the centre). f64 throughout, as the CPU solver.

extern "C" __global__ void quadrant_solve_f64(const double* y, const double* k, double* x, i64 n, i64 c,
                                              i64 h, i64 w) {
    for (i64 img = blockIdx.x; img < n; img += gridDim.x) {
        const double* yi = y + img * c * h * w;
        double* xi = x + img * c * h * w;
        for (i64 d = 0; d < h + w - 1; ++d) {
            i64 first = d > w - 1 ? d - (w - 1) : 0;
            i64 last = d < h - 1 ? d : h - 1;
            for (i64 i = first + threadIdx.x; i <= last; i += blockDim.x) {
                i64 j = d - i;
                for (i64 o = 0; o < c; ++o) {
                    double r = yi[(o * h + i) * w + j];
                    for (i64 ci = 0; ci < c; ++ci) {
                        const double* kk = k + (o * c + ci) * 9;
                        if (i > 0 && j > 0) r -= kk[0] * xi[(ci * h + i - 1) * w + j - 1];
                        if (i > 0) r -= kk[1] * xi[(ci * h + i - 1) * w + j];
                        if (j > 0) r -= kk[3] * xi[(ci * h + i) * w + j - 1];
                    }
                    for (i64 ci = 0; ci < o; ++ci) {
                        r -= k[(o * c + ci) * 9 + 4] * xi[(ci * h + i) * w + j];
                    }
                    xi[(o * h + i) * w + j] = r / k[(o * c + o) * 9 + 4];
                }
            }
            __syncthreads();
        }
    }
}
