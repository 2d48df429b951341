//! Figures drawn with `plotters` into an in-memory bitmap (`plotters-bitmap`) and encoded as PNG.
//!
//! A [`Figure`] shows inline when it is the value of an evcxr notebook cell (it implements
//! `evcxr_display`, MIME `image/png`) and can be saved to a file. A figure is made of panels
//! side by side ([`row`], [`grid`]); each panel type is one kind of picture:
//!
//! * [`DensityMap`]: a (log-)density on a grid, as a heat map;
//! * [`Scatter`]: samples over data;
//! * [`VectorField`]: the arrows of a score field, exact or learned, over the data;
//! * [`Curves`]: loss curves (train and test per epoch);
//! * [`Histogram`]: normalised histograms, e.g. sample radii against the exact radial law;
//! * [`Animation`]: frames of figures as one GIF (particles under a sampler).
//!
//! Text uses DejaVu Sans, embedded in the crate (a bare machine has no font plotters finds).

use crate::error::{Error, Result};
use crate::score::Score;
use crate::training::History;
use base64::Engine;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters_bitmap::BitMapBackend;
use std::path::Path;
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

/// A drawing area of a figure.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// A rectangle of the plane, `[x_min, x_max, y_min, y_max]`.
pub type Bounds = [f64; 4];

/// Size in pixels of one panel in [`row`] and [`Panel::figure`].
pub const PANEL_SIZE: (u32, u32) = (460, 420);

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        [FontStyle::Normal, FontStyle::Bold]
            .into_iter()
            .all(|style| plotters::style::register_font(FAMILY, style, FONT).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Plot(
            "the embedded font could not be registered".into(),
        ))
    }
}

fn plot_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Plot(e.to_string())
}

/// Rows of a `[n, 2]` tensor as points.
pub fn points(x: &Tensor) -> Result<Vec<(f64, f64)>> {
    if x.dim() != 2 || x.size()[1] != 2 {
        return Err(Error::Shape {
            what: "2D points",
            expected: "[n, 2]".into(),
            got: x.size(),
        });
    }
    let flat: Vec<f64> = to_vec(x)?;
    Ok(flat.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

/// All values of a tensor, flattened, as `f64` on the CPU.
pub fn to_vec(x: &Tensor) -> Result<Vec<f64>> {
    let flat = x
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Double)
        .flatten(0, -1);
    Ok(Vec::<f64>::try_from(&flat)?)
}

/// A rendered figure: an RGB bitmap.
#[derive(Clone)]
pub struct Figure {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl std::fmt::Debug for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Figure({}x{})", self.width, self.height)
    }
}

impl Figure {
    /// Width and height in pixels.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The figure encoded as PNG.
    pub fn png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(plot_err)?;
        writer.write_image_data(&self.rgb).map_err(plot_err)?;
        writer.finish().map_err(plot_err)?;
        Ok(out)
    }

    /// Writes the figure as a PNG file (folders are created as needed).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_file(path.as_ref(), &self.png()?)
    }

    /// Shows the figure inline in an evcxr notebook (called by evcxr for a cell's value).
    pub fn evcxr_display(&self) {
        match self.png() {
            Ok(bytes) => println!(
                "EVCXR_BEGIN_CONTENT image/png\n{}\nEVCXR_END_CONTENT",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
            Err(e) => eprintln!("figure could not be encoded: {e}"),
        }
    }
}

/// Writes `bytes` to `path`, creating its folders; errors name the path.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, bytes).map_err(io)
}

/// One picture of a figure.
pub trait Panel {
    /// Draws the panel into `area`.
    fn draw(&self, area: &Area<'_>) -> Result<()>;

    /// This panel alone as a figure.
    fn figure(&self) -> Result<Figure>
    where
        Self: Sized,
    {
        grid(&[self], 1, PANEL_SIZE)
    }
}

/// Panels side by side, each [`PANEL_SIZE`].
pub fn row(panels: &[&dyn Panel]) -> Result<Figure> {
    grid(panels, panels.len().max(1), PANEL_SIZE)
}

/// Panels in a grid of `cols` columns (filled row by row), each `panel_size` pixels.
pub fn grid(panels: &[&dyn Panel], cols: usize, panel_size: (u32, u32)) -> Result<Figure> {
    ensure_font()?;
    if panels.is_empty() || cols == 0 {
        return Err(Error::Plot(
            "a figure needs at least one panel and one column".into(),
        ));
    }
    let rows = panels.len().div_ceil(cols);
    let (width, height) = (panel_size.0 * cols as u32, panel_size.1 * rows as u32);
    let mut rgb = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let areas = root.split_evenly((rows, cols));
        for (panel, area) in panels.iter().zip(areas.iter()) {
            panel.draw(area)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(Figure { width, height, rgb })
}

fn check_bounds(bounds: Bounds) -> Result<Bounds> {
    let [x0, x1, y0, y1] = bounds;
    if bounds.iter().all(|b| b.is_finite()) && x0 < x1 && y0 < y1 {
        Ok(bounds)
    } else {
        Err(Error::InvalidParameter {
            name: "bounds",
            value: format!("{bounds:?}"),
            why: "needs finite [x_min, x_max, y_min, y_max] with x_min < x_max and y_min < y_max",
        })
    }
}

/// Centres of an `n × n` grid over `bounds`, as a `[n², 2]` tensor (x fastest).
pub fn grid_points(bounds: Bounds, n: usize) -> Result<Tensor> {
    let [x0, x1, y0, y1] = check_bounds(bounds)?;
    if n < 2 {
        return Err(Error::InvalidParameter {
            name: "resolution",
            value: n.to_string(),
            why: "a grid needs at least 2 points a side",
        });
    }
    let n = n as i64;
    let (dx, dy) = ((x1 - x0) / n as f64, (y1 - y0) / n as f64);
    let opts = (Kind::Float, Device::Cpu);
    let xs = Tensor::arange(n, opts) * dx + (x0 + dx / 2.0);
    let ys = Tensor::arange(n, opts) * dy + (y0 + dy / 2.0);
    let gx = xs.unsqueeze(0).expand([n, n], false);
    let gy = ys.unsqueeze(1).expand([n, n], false);
    Ok(Tensor::stack(&[gx.flatten(0, -1), gy.flatten(0, -1)], 1))
}

fn chart<'a, 'b>(
    area: &'a Area<'b>,
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 17))
        .margin(10)
        .x_label_area_size(28)
        .y_label_area_size(44)
        .build_cartesian_2d(x, y)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .label_style((FAMILY, 12))
        .draw()
        .map_err(plot_err)?;
    Ok(chart)
}

type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The legend box every panel with labelled series uses (upper right).
fn draw_legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> Result<()> {
    chart
        .configure_series_labels()
        .label_font((FAMILY, 12))
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)
}

/// A labelled line of the k-th series colour.
fn draw_line<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    k: usize,
    label: &str,
    points: impl IntoIterator<Item = (f64, f64)>,
) -> Result<()> {
    let color = COLORS[(k + 1) % COLORS.len()];
    chart
        .draw_series(LineSeries::new(points, color.stroke_width(2)))
        .map_err(plot_err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    Ok(())
}

/// A density `exp(log p)` on a grid, drawn as a heat map (viridis, scaled to its maximum).
#[derive(Debug, Clone)]
pub struct DensityMap {
    /// Panel title.
    pub title: String,
    /// Region shown.
    pub bounds: Bounds,
    /// Cells per side.
    pub resolution: usize,
    /// `resolution²` density values, x fastest, normalised to a maximum of 1.
    pub values: Vec<f64>,
}

impl DensityMap {
    /// Evaluates `log_density` (`[n, 2] -> [n]`) on a `resolution × resolution` grid.
    pub fn of_log_density(
        title: impl Into<String>,
        log_density: impl Fn(&Tensor) -> Tensor,
        bounds: Bounds,
        resolution: usize,
    ) -> Result<Self> {
        let grid = grid_points(bounds, resolution)?;
        let log_p = tch::no_grad(|| log_density(&grid));
        let values = to_vec(&(&log_p - log_p.max()).exp())?;
        if values.len() != resolution * resolution || values.iter().any(|v| !v.is_finite()) {
            return Err(Error::Plot(format!(
                "log-density gave {} values ({} expected) or non-finite ones",
                values.len(),
                resolution * resolution
            )));
        }
        Ok(DensityMap {
            title: title.into(),
            bounds,
            resolution,
            values,
        })
    }
}

impl DensityMap {
    /// The density of a [`Density`](crate::data::Density) on a grid.
    pub fn of_density(
        title: impl Into<String>,
        density: &(impl crate::data::Density + ?Sized),
        bounds: Bounds,
        resolution: usize,
    ) -> Result<Self> {
        Self::of_log_density(title, |x| density.log_density(x), bounds, resolution)
    }
}

impl Panel for DensityMap {
    fn draw(&self, area: &Area<'_>) -> Result<()> {
        let [x0, x1, y0, y1] = self.bounds;
        let mut chart = chart(area, &self.title, x0..x1, y0..y1)?;
        let n = self.resolution;
        let (dx, dy) = ((x1 - x0) / n as f64, (y1 - y0) / n as f64);
        chart
            .draw_series(self.values.iter().enumerate().map(|(k, v)| {
                let (i, j) = ((k % n) as f64, (k / n) as f64);
                let color = ViridisRGB.get_color(*v as f32);
                Rectangle::new(
                    [
                        (x0 + i * dx, y0 + j * dy),
                        (x0 + (i + 1.0) * dx, y0 + (j + 1.0) * dy),
                    ],
                    color.filled(),
                )
            }))
            .map_err(plot_err)?;
        Ok(())
    }
}

/// One set of points of a [`Scatter`].
#[derive(Debug, Clone)]
pub struct ScatterLayer {
    /// Legend entry.
    pub label: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
    /// Colour.
    pub color: RGBColor,
    /// Dot radius in pixels.
    pub radius: u32,
}

/// Points over points: samples over data.
#[derive(Debug, Clone)]
pub struct Scatter {
    /// Panel title.
    pub title: String,
    /// Region shown.
    pub bounds: Bounds,
    /// Layers, drawn in order.
    pub layers: Vec<ScatterLayer>,
}

/// Colours of successive layers and series.
pub const COLORS: [RGBColor; 5] = [
    RGBColor(160, 160, 160),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

impl Scatter {
    /// An empty scatter plot over `bounds`.
    pub fn new(title: impl Into<String>, bounds: Bounds) -> Result<Self> {
        Ok(Scatter {
            title: title.into(),
            bounds: check_bounds(bounds)?,
            layers: Vec::new(),
        })
    }

    /// Adds the rows of a `[n, 2]` tensor as a layer of samples (blue, orange, green, red in
    /// turn).
    pub fn points(mut self, label: impl Into<String>, x: &Tensor) -> Result<Self> {
        let k = self.layers.iter().filter(|l| l.color != COLORS[0]).count();
        let color = COLORS[1 + k % (COLORS.len() - 1)];
        self.layers.push(ScatterLayer {
            label: label.into(),
            points: points(x)?,
            color,
            radius: 1,
        });
        Ok(self)
    }

    /// Adds the rows of a `[n, 2]` tensor as data (grey), drawn under the samples added after.
    pub fn data(mut self, label: impl Into<String>, x: &Tensor) -> Result<Self> {
        self.layers.push(ScatterLayer {
            label: label.into(),
            points: points(x)?,
            color: COLORS[0],
            radius: 1,
        });
        Ok(self)
    }
}

impl Panel for Scatter {
    fn draw(&self, area: &Area<'_>) -> Result<()> {
        let [x0, x1, y0, y1] = self.bounds;
        let mut chart = chart(area, &self.title, x0..x1, y0..y1)?;
        for layer in &self.layers {
            let color = layer.color;
            let r = layer.radius;
            chart
                .draw_series(
                    layer
                        .points
                        .iter()
                        .filter(|(x, y)| (x0..=x1).contains(x) && (y0..=y1).contains(y))
                        .map(|p| Circle::new(*p, r, color.filled())),
                )
                .map_err(plot_err)?
                .label(layer.label.as_str())
                .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
        }
        draw_legend(&mut chart)
    }
}

/// How long the arrows of a [`VectorField`] are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArrowLength {
    /// All of one length (80% of a grid cell); the norm shows only in the colour. Reads well
    /// near the data, where the score is small and proportional arrows shrink to dots.
    #[default]
    Normalised,
    /// Proportional to the norm, the 90th percentile spanning 90% of a cell (longer ones
    /// clipped to a cell).
    Proportional,
}

/// Arrows of a 2D vector field (a score) on a grid, coloured by the norm (viridis, light =
/// long, on a log scale), optionally over data points.
#[derive(Debug, Clone)]
pub struct VectorField {
    /// Panel title.
    pub title: String,
    /// Region shown.
    pub bounds: Bounds,
    /// `(position, vector)` per grid point.
    pub arrows: Vec<((f64, f64), (f64, f64))>,
    /// How the arrows' lengths are drawn.
    pub length: ArrowLength,
    /// Points drawn in grey under the arrows (the data).
    pub background: Vec<(f64, f64)>,
}

impl VectorField {
    /// Evaluates `score` at noise level `sigma` on an `n × n` grid over `bounds`.
    pub fn of_score(
        title: impl Into<String>,
        score: &(impl Score + ?Sized),
        sigma: f64,
        bounds: Bounds,
        n: usize,
    ) -> Result<Self> {
        // On the network's device (a grid on the CPU fed to a network on the GPU fails).
        let grid = grid_points(bounds, n)?.to_device(score.device().unwrap_or(Device::Cpu));
        let values = tch::no_grad(|| score.score_at(&grid, sigma))?;
        let arrows = points(&grid)?.into_iter().zip(points(&values)?).collect();
        Ok(VectorField {
            title: title.into(),
            bounds,
            arrows,
            length: ArrowLength::default(),
            background: Vec::new(),
        })
    }

    /// Draws the rows of a `[n, 2]` tensor (the data) in grey under the arrows.
    pub fn over(mut self, data: &Tensor) -> Result<Self> {
        self.background = points(data)?;
        Ok(self)
    }

    /// Arrows proportional to the norm instead of all of one length.
    pub fn proportional(mut self) -> Self {
        self.length = ArrowLength::Proportional;
        self
    }
}

impl Panel for VectorField {
    /// See [`ArrowLength`]; the colour is the norm on a log scale between the smallest and the
    /// largest.
    fn draw(&self, area: &Area<'_>) -> Result<()> {
        let [x0, x1, y0, y1] = self.bounds;
        let mut chart = chart(area, &self.title, x0..x1, y0..y1)?;
        chart
            .draw_series(
                self.background
                    .iter()
                    .filter(|(x, y)| (x0..=x1).contains(x) && (y0..=y1).contains(y))
                    .map(|p| Circle::new(*p, 1, COLORS[0].mix(0.6).filled())),
            )
            .map_err(plot_err)?;
        let mut norms: Vec<f64> = self
            .arrows
            .iter()
            .map(|(_, (u, v))| u.hypot(*v))
            .filter(|n| n.is_finite())
            .collect();
        if norms.is_empty() {
            return Err(Error::Plot("the vector field has no finite value".into()));
        }
        norms.sort_by(f64::total_cmp);
        let p90 = norms[(norms.len() * 9 / 10).min(norms.len() - 1)].max(1e-12);
        let max = norms[norms.len() - 1].max(1e-12);
        let min = norms[0].max(max * 1e-6);
        let cell = ((x1 - x0).min(y1 - y0)) / (self.arrows.len() as f64).sqrt();
        let scale = 0.9 * cell / p90;
        let mut segments = Vec::with_capacity(self.arrows.len() * 3);
        for &((x, y), (u, v)) in &self.arrows {
            let norm = u.hypot(v);
            if !norm.is_finite() || norm == 0.0 {
                continue;
            }
            let len = match self.length {
                ArrowLength::Normalised => 0.8 * cell,
                ArrowLength::Proportional => (norm * scale).min(cell),
            };
            let (ux, uy) = (u / norm, v / norm);
            let tip = (x + ux * len, y + uy * len);
            let head = 0.3 * len;
            let shade = if max > min {
                (norm.max(min) / min).ln() / (max / min).ln()
            } else {
                1.0
            };
            let color = ViridisRGB.get_color(shade as f32 * 0.9);
            let style = ShapeStyle::from(&color).stroke_width(1);
            segments.push(PathElement::new(vec![(x, y), tip], style));
            for angle in [2.6f64, -2.6] {
                let (c, s) = (angle.cos(), angle.sin());
                let back = (ux * c - uy * s, ux * s + uy * c);
                segments.push(PathElement::new(
                    vec![tip, (tip.0 + back.0 * head, tip.1 + back.1 * head)],
                    style,
                ));
            }
        }
        chart.draw_series(segments).map_err(plot_err)?;
        Ok(())
    }
}

/// Line plots sharing axes, e.g. train and test loss per epoch.
#[derive(Debug, Clone)]
pub struct Curves {
    /// Panel title.
    pub title: String,
    /// `(label, points)` per curve.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

impl Curves {
    /// Train and test loss per epoch from a training history.
    pub fn losses(title: impl Into<String>, history: &History) -> Self {
        let per_epoch = |v: &[f64]| -> Vec<(f64, f64)> {
            v.iter()
                .enumerate()
                .map(|(i, y)| ((i + 1) as f64, *y))
                .collect()
        };
        let mut series = vec![("train".to_string(), per_epoch(&history.train_loss))];
        if !history.test_loss.is_empty() {
            series.push(("test".to_string(), per_epoch(&history.test_loss)));
        }
        Curves {
            title: title.into(),
            series,
        }
    }
}

fn range_of(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return None;
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    Some((lo - pad, hi + pad))
}

impl Panel for Curves {
    fn draw(&self, area: &Area<'_>) -> Result<()> {
        let all = || self.series.iter().flat_map(|(_, pts)| pts.iter());
        let (Some((xa, xb)), Some((ya, yb))) =
            (range_of(all().map(|p| p.0)), range_of(all().map(|p| p.1)))
        else {
            return Err(Error::Plot(format!(
                "'{}': no finite values to plot",
                self.title
            )));
        };
        let mut chart = chart(area, &self.title, xa..xb, ya..yb)?;
        for (k, (label, pts)) in self.series.iter().enumerate() {
            draw_line(&mut chart, k, label, pts.iter().copied())?;
        }
        draw_legend(&mut chart)
    }
}

/// Normalised histograms (densities) of several samples over one range, drawn as step lines.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Panel title.
    pub title: String,
    /// `[low, high)` of the bins.
    pub range: (f64, f64),
    /// Number of bins.
    pub bins: usize,
    /// `(label, values)` per sample.
    pub samples: Vec<(String, Vec<f64>)>,
}

impl Histogram {
    /// An empty histogram of `bins` bins over `range`.
    pub fn new(title: impl Into<String>, range: (f64, f64), bins: usize) -> Result<Self> {
        if !(range.0.is_finite() && range.1.is_finite() && range.0 < range.1) || bins == 0 {
            return Err(Error::InvalidParameter {
                name: "histogram range/bins",
                value: format!("{range:?}, {bins}"),
                why: "needs a finite range with low < high and at least one bin",
            });
        }
        Ok(Histogram {
            title: title.into(),
            range,
            bins,
            samples: Vec::new(),
        })
    }

    /// Adds the values of a tensor (any shape) as one sample.
    pub fn sample(mut self, label: impl Into<String>, values: &Tensor) -> Result<Self> {
        self.samples.push((label.into(), to_vec(values)?));
        Ok(self)
    }

    fn density(&self, values: &[f64]) -> Vec<f64> {
        let (lo, hi) = self.range;
        let width = (hi - lo) / self.bins as f64;
        let mut counts = vec![0.0; self.bins];
        for v in values.iter().filter(|v| (lo..hi).contains(*v)) {
            counts[(((v - lo) / width) as usize).min(self.bins - 1)] += 1.0;
        }
        let total = values.len().max(1) as f64;
        counts.iter().map(|c| c / (total * width)).collect()
    }
}

impl Panel for Histogram {
    fn draw(&self, area: &Area<'_>) -> Result<()> {
        let (lo, hi) = self.range;
        let width = (hi - lo) / self.bins as f64;
        let densities: Vec<Vec<f64>> = self.samples.iter().map(|(_, v)| self.density(v)).collect();
        let top = densities
            .iter()
            .flatten()
            .copied()
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.08;
        let mut chart = chart(area, &self.title, lo..hi, 0.0..top)?;
        for (k, ((label, _), dens)) in self.samples.iter().zip(&densities).enumerate() {
            let steps = dens.iter().enumerate().flat_map(|(i, d)| {
                let a = lo + i as f64 * width;
                [(a, *d), (a + width, *d)]
            });
            draw_line(&mut chart, k, label, steps)?;
        }
        draw_legend(&mut chart)
    }
}

/// Grey-scale images in a grid, pixel values clamped to [0, 1] (black 0, white 1), with an
/// optional label at the left of each row (e.g. the noise level of that row).
#[derive(Debug, Clone)]
pub struct ImageGrid {
    /// Panel title.
    pub title: String,
    /// Image height and width in pixels.
    pub image_size: (usize, usize),
    /// Images per row.
    pub cols: usize,
    /// Pixel values of each image, row-major, in [0, 1].
    pub images: Vec<Vec<f64>>,
    /// One label per row of the grid (empty for none).
    pub row_labels: Vec<String>,
}

impl ImageGrid {
    /// The images of a `[n, 1, h, w]` (or `[n, h, w]`) tensor, `cols` per row, clamped to
    /// [0, 1]; rescale first if they live in [-1, 1] ([`crate::images::Scaling::invert`]).
    pub fn new(title: impl Into<String>, images: &Tensor, cols: usize) -> Result<Self> {
        let size = images.size();
        let ok = match size.len() {
            4 => size[1] == 1,
            3 => true,
            _ => false,
        };
        if !ok || size[0] == 0 || cols == 0 {
            return Err(Error::Shape {
                what: "image grid (grey-scale images, at least one, cols > 0)",
                expected: "[n, 1, h, w] or [n, h, w]".into(),
                got: size,
            });
        }
        let (h, w) = (size[size.len() - 2] as usize, size[size.len() - 1] as usize);
        let flat = to_vec(&images.clamp(0.0, 1.0))?;
        Ok(ImageGrid {
            title: title.into(),
            image_size: (h, w),
            cols,
            images: flat.chunks_exact(h * w).map(<[f64]>::to_vec).collect(),
            row_labels: Vec::new(),
        })
    }

    /// Rows of images with a label each: `rows[i]` is `[k, 1, h, w]`, drawn as row i.
    pub fn rows(title: impl Into<String>, rows: &[(String, Tensor)]) -> Result<Self> {
        let Some((_, first)) = rows.first() else {
            return Err(Error::Plot("an image grid needs at least one row".into()));
        };
        let k = first.size()[0] as usize;
        if rows.iter().any(|(_, t)| t.size()[0] as usize != k) {
            return Err(Error::Plot(
                "every row of an image grid needs the same number of images".into(),
            ));
        }
        let all = Tensor::cat(
            &rows
                .iter()
                .map(|(_, t)| t.shallow_clone())
                .collect::<Vec<_>>(),
            0,
        );
        let mut grid = ImageGrid::new(title, &all, k)?;
        grid.row_labels = rows.iter().map(|(l, _)| l.clone()).collect();
        Ok(grid)
    }

    /// A figure sized to show every image pixel as `scale × scale` screen pixels.
    pub fn figure_scaled(&self, scale: u32) -> Result<Figure> {
        let (h, w) = self.image_size;
        let rows = self.images.len().div_ceil(self.cols) as u32;
        let label_space = if self.row_labels.is_empty() { 10 } else { 70 };
        let width = label_space + self.cols as u32 * (w as u32 * scale + 2) + 10;
        let height = 36 + rows * (h as u32 * scale + 2) + 10;
        grid(&[self], 1, (width, height))
    }
}

impl Panel for ImageGrid {
    fn draw(&self, area: &Area<'_>) -> Result<()> {
        let area = area.titled(&self.title, (FAMILY, 17)).map_err(plot_err)?;
        let (h, w) = self.image_size;
        let rows = self.images.len().div_ceil(self.cols);
        let label_space: i32 = if self.row_labels.is_empty() { 10 } else { 70 };
        let (aw, ah) = area.dim_in_pixel();
        // The largest integer scale with cols·(w·scale + 2) and rows·(h·scale + 2) fitting.
        let scale_w = ((aw as i32 - label_space - 10) / self.cols as i32 - 2) / w as i32;
        let scale_h = ((ah as i32 - 10) / rows as i32 - 2) / h as i32;
        let scale = scale_w.min(scale_h).max(1);
        let (cell_w, cell_h) = (w as i32 * scale + 2, h as i32 * scale + 2);
        for (k, img) in self.images.iter().enumerate() {
            let (r, c) = ((k / self.cols) as i32, (k % self.cols) as i32);
            let (x0, y0) = (label_space + c * cell_w, r * cell_h);
            for (p, v) in img.iter().enumerate() {
                let g = (v * 255.0).round() as u8;
                let (px, py) = (x0 + (p % w) as i32 * scale, y0 + (p / w) as i32 * scale);
                area.draw(&Rectangle::new(
                    [(px, py), (px + scale, py + scale)],
                    RGBColor(g, g, g).filled(),
                ))
                .map_err(plot_err)?;
            }
        }
        for (r, label) in self.row_labels.iter().enumerate() {
            let y = r as i32 * cell_h + cell_h / 2 - 6;
            area.draw(&Text::new(label.clone(), (4, y), (FAMILY, 12)))
                .map_err(plot_err)?;
        }
        Ok(())
    }
}

/// Frames of figures as one animated GIF: particles under Langevin dynamics, a batch of images
/// emerging from noise. It shows inline when it is the value of a cell, as one HTML image
/// (`text/html`, the GIF as a data URI: evcxr keeps one output per MIME type per cell, and an
/// HTML page keeps the animation), and can be saved to a `.gif` file.
#[derive(Debug)]
pub struct Animation {
    frames: Vec<Figure>,
    /// Time each frame is shown, in milliseconds.
    pub delay_ms: u32,
}

impl Animation {
    /// An animation of `frames`, all of the same size, each shown `delay_ms` milliseconds.
    pub fn new(frames: Vec<Figure>, delay_ms: u32) -> Result<Self> {
        let Some(first) = frames.first() else {
            return Err(Error::Plot("an animation needs at least one frame".into()));
        };
        let size = first.size();
        if let Some(other) = frames.iter().find(|f| f.size() != size) {
            return Err(Error::Plot(format!(
                "frames of different sizes: {:?} and {:?}",
                size,
                other.size()
            )));
        }
        if size.0 > u16::MAX as u32 || size.1 > u16::MAX as u32 {
            return Err(Error::Plot(format!(
                "frame size {size:?} is too large for a GIF"
            )));
        }
        Ok(Animation { frames, delay_ms })
    }

    /// Particles moving over the data: one [`Scatter`] frame per `(title, points)`, the data (if
    /// any) in grey under them.
    pub fn particles(
        frames: &[(String, Tensor)],
        data: Option<&Tensor>,
        bounds: Bounds,
        delay_ms: u32,
    ) -> Result<Self> {
        let figures = frames
            .iter()
            .map(|(title, x)| {
                let scatter = Scatter::new(title.as_str(), bounds)?;
                let scatter = match data {
                    Some(d) => scatter.data("data", d)?,
                    None => scatter,
                };
                scatter.points("particles", x)?.figure()
            })
            .collect::<Result<Vec<_>>>()?;
        Animation::new(figures, delay_ms)
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Always false (an animation has at least one frame).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The animation encoded as a looping GIF (a 256-colour palette per frame, NeuQuant).
    pub fn gif(&self) -> Result<Vec<u8>> {
        let (w, h) = self.frames[0].size();
        let mut out = Vec::new();
        {
            let mut encoder =
                gif::Encoder::new(&mut out, w as u16, h as u16, &[]).map_err(plot_err)?;
            encoder
                .set_repeat(gif::Repeat::Infinite)
                .map_err(plot_err)?;
            for figure in &self.frames {
                let mut frame = gif::Frame::from_rgb_speed(w as u16, h as u16, &figure.rgb, 10);
                // GIF delays are in hundredths of a second.
                frame.delay = (self.delay_ms / 10).clamp(1, u16::MAX as u32) as u16;
                encoder.write_frame(&frame).map_err(plot_err)?;
            }
        }
        Ok(out)
    }

    /// Writes the GIF file (folders are created as needed).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_file(path.as_ref(), &self.gif()?)
    }

    /// Shows the animation inline in an evcxr notebook (called by evcxr for a cell's value).
    pub fn evcxr_display(&self) {
        match self.gif() {
            Ok(bytes) => println!(
                "EVCXR_BEGIN_CONTENT text/html\n<img alt=\"animation\" src=\"data:image/gif;base64,{}\"/>\nEVCXR_END_CONTENT",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
            Err(e) => eprintln!("animation could not be encoded: {e}"),
        }
    }
}
