//! Datasets: MNIST (IDX), CIFAR-10 (binary batches), a built-in image set
//! that needs no download, and 2-D / 1-D toy densities.

pub mod cifar10;
pub mod download;
pub mod mnist;
pub mod shapes;
pub mod toys;

use crate::error::{Result, TrainError};
use std::path::Path;

/// Images stored as bytes, channel-first per image: image `i`, channel `c`,
/// row `y`, column `x` is `pixels[((i * C + c) * H + y) * W + x]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    pub pixels: Vec<u8>,
    /// Per-image `(C, H, W)`.
    pub shape: [usize; 3],
    pub labels: Vec<u8>,
}

impl ImageSet {
    /// Checks that the pixels and labels agree with the shape.
    pub fn new(pixels: Vec<u8>, shape: [usize; 3], labels: Vec<u8>) -> Result<Self> {
        let per = shape.iter().product::<usize>();
        if per == 0 || pixels.len() != per * labels.len() {
            return Err(TrainError::Config(format!(
                "ImageSet: {} pixel bytes and {} labels do not fit images of shape {shape:?}",
                pixels.len(),
                labels.len()
            )));
        }
        Ok(ImageSet {
            pixels,
            shape,
            labels,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image, `C H W`.
    pub fn image_size(&self) -> usize {
        self.shape.iter().product()
    }

    /// The bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let d = self.image_size();
        &self.pixels[i * d..(i + 1) * d]
    }

    /// The first `n` images (all of them if there are fewer).
    pub fn take(&self, n: usize) -> ImageSet {
        let n = n.min(self.len());
        ImageSet {
            pixels: self.pixels[..n * self.image_size()].to_vec(),
            shape: self.shape,
            labels: self.labels[..n].to_vec(),
        }
    }
}

/// A train and a test split.
#[derive(Clone, Debug)]
pub struct Splits {
    pub train: ImageSet,
    pub test: ImageSet,
}

impl Splits {
    /// Both splits, checked to hold images, all of one shape (errors name `source`).
    pub fn new(train: ImageSet, test: ImageSet, source: &Path) -> Result<Splits> {
        for (name, split) in [("training", &train), ("test", &test)] {
            if split.is_empty() {
                return Err(TrainError::data(
                    source,
                    format!("the {name} split holds no images"),
                ));
            }
        }
        if train.shape != test.shape {
            return Err(TrainError::data(
                source,
                format!(
                    "the test images are {:?} (C, H, W) but the training images are {:?}",
                    test.shape, train.shape
                ),
            ));
        }
        Ok(Splits { train, test })
    }
}

/// The first of `names` that exists in `dir` (each tried raw, then `.gz`).
pub(crate) fn find_file(dir: &Path, names: &[&str]) -> Result<std::path::PathBuf> {
    for name in names {
        for candidate in [dir.join(name), dir.join(format!("{name}.gz"))] {
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(TrainError::data(
        dir,
        format!("none of {names:?} (raw or .gz) is in this directory"),
    ))
}
