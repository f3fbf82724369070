//! The ragged ends of small images. The position-tiled kernels (1x1
//! products and 3x3 position tiles) put consecutive positions of one image
//! in a vector, so an image whose positions are not a whole number of
//! vectors ends in a mostly empty one: 7x7 = 49 positions on 16 lanes take
//! four vectors for 3 1/16 vectors of work, a quarter of the multiply-adds
//! spent on padding. Where that waste is large, the kernels cover only the
//! whole vectors of each image, and the positions after them (its tail) are
//! computed for a group of images at once: their inputs are gathered into
//! one matrix `(k, images x tail)` (the input channels of a 1x1
//! convolution, or the `c x 9` taps of a 3x3 one with zero padding), one
//! product with the weights as `(rows, k)` gives their outputs, and these
//! are scattered back into the images.

use super::pointwise_product::{self, Packed, ProductKernel};
use crate::Element;
use std::mem::MaybeUninit;

/// Output rows per tail position below which gathering the tails' inputs
/// (`k` values per position) costs more than the empty lanes it saves (the
/// input gradient of a 4 -> 64-channel 3x3 convolution on 7x7 images, 4
/// rows, took 8% longer, Intel Xeon).
const MIN_ROWS: usize = 8;

/// What an output position reads from its image `(c, h, w)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taps {
    /// Its own pixel in every channel (a 1x1 convolution).
    Pointwise,
    /// Its 3x3 neighbourhood in every channel, zero outside the image (a 3x3
    /// stride-1 convolution with padding 1).
    Same3x3 { h: usize, w: usize },
}

impl Taps {
    fn per_channel(self) -> usize {
        match self {
            Taps::Pointwise => 1,
            Taps::Same3x3 { .. } => 9,
        }
    }
}

/// The split of each image's positions into whole vectors and a tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RaggedTails {
    taps: Taps,
    channels: usize,
    positions: usize,
    /// Positions covered by whole vectors, computed image by image.
    main: usize,
}

impl RaggedTails {
    /// The split for images of `channels x positions` with `rows` outputs
    /// per position, on vectors of `lanes`, where the last, partial vector
    /// of an image would leave at least an eighth of all its vectors' lanes
    /// empty and there are at least [`MIN_ROWS`] outputs per tail position
    /// to pay for gathering its inputs; `None` otherwise.
    pub(crate) fn new(
        taps: Taps,
        (channels, rows): (usize, usize),
        positions: usize,
        lanes: usize,
    ) -> Option<Self> {
        let tail = positions % lanes.max(1);
        let empty = if tail == 0 { 0 } else { lanes - tail };
        let lanes_used = positions.div_ceil(lanes.max(1)) * lanes;
        let pays = rows >= MIN_ROWS * tail;
        (empty > 0 && 8 * empty >= lanes_used && pays).then_some(RaggedTails {
            taps,
            channels,
            positions,
            main: positions - tail,
        })
    }

    /// The positions of each image that the image-by-image kernel computes.
    pub(crate) fn main(&self) -> usize {
        self.main
    }

    /// The images a task should take so that their tails fill vectors: a
    /// group per task with at least two tasks per thread, at most 32 images.
    pub(crate) fn group(images: usize) -> usize {
        (images / (2 * rayon::current_num_threads().max(1))).clamp(1, 32)
    }

    /// Writes the tail positions of `images` consecutive outputs `out`
    /// (`(rows, positions)` each) from their inputs `x` (`(channels,
    /// positions)` each) with `a`, the weights packed as `(rows, channels x
    /// taps)`, using `kernel`.
    pub(crate) fn apply<T: Element>(
        &self,
        (a, kernel): (&Packed<T>, ProductKernel<T>),
        x: &[T],
        out: &mut [MaybeUninit<T>],
        images: usize,
    ) {
        let (c, hw, main) = (self.channels, self.positions, self.main);
        let tail = hw - main;
        let columns = images * tail;
        let k = c * self.taps.per_channel();
        let rows = out.len() / (images * hw).max(1);
        assert!(x.len() >= images * c * hw && out.len() == images * rows * hw);
        let mut gathered = vec![T::zero(); k * columns];
        for img in 0..images {
            let xi = &x[img * c * hw..][..c * hw];
            for s in 0..tail {
                let column = img * tail + s;
                self.gather(xi, main + s, |row, v| gathered[row * columns + column] = v);
            }
        }
        let mut products = vec![MaybeUninit::uninit(); rows * columns];
        pointwise_product::image(
            a,
            kernel,
            &gathered,
            &mut products,
            (columns, columns),
            false,
        );
        // column by column, down the rows (runs of `tail` would each be a
        // copy call)
        for img in 0..images {
            for s in 0..tail {
                let column = img * tail + s;
                for r in 0..rows {
                    out[(img * rows + r) * hw + main + s] = products[r * columns + column];
                }
            }
        }
    }

    /// Calls `put(row, value)` for the inputs of output position `p` of the
    /// image `xi`: row `ch x taps + tap` holds tap `tap` of channel `ch`.
    fn gather<T: Element>(&self, xi: &[T], p: usize, mut put: impl FnMut(usize, T)) {
        let hw = self.positions;
        match self.taps {
            Taps::Pointwise => {
                for ch in 0..self.channels {
                    put(ch, xi[ch * hw + p]);
                }
            }
            Taps::Same3x3 { h, w } => {
                let (r, q) = (p / w, p % w);
                for tap in 0..9 {
                    let (sr, sq) = ((r + tap / 3).checked_sub(1), (q + tap % 3).checked_sub(1));
                    let source = sr
                        .zip(sq)
                        .filter(|&(sr, sq)| sr < h && sq < w)
                        .map(|(sr, sq)| sr * w + sq);
                    for ch in 0..self.channels {
                        let v = source.map_or(T::zero(), |s| xi[ch * hw + s]);
                        put(ch * 9 + tap, v);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{RaggedTails, Taps};

    #[test]
    fn tails_are_split_off_only_where_they_waste_an_eighth_of_the_lanes() {
        let split = |positions, rows, lanes| {
            RaggedTails::new(Taps::Pointwise, (4, rows), positions, lanes).map(|t| t.main())
        };
        // 7x7 on 16 lanes: 15 of 64 lanes empty
        assert_eq!(split(49, 64, 16), Some(48));
        // 14x14 on 16 lanes: 12 of 208 empty
        assert_eq!(split(196, 64, 16), None);
        // whole vectors, and scalar kernels
        assert_eq!(split(64, 64, 16), None);
        assert_eq!(split(49, 64, 1), None);
        // too few outputs to pay for the gather
        assert_eq!(split(49, 4, 16), None);
        // images smaller than a vector are all tail
        assert_eq!(split(4, 64, 16), Some(0));
    }
}
