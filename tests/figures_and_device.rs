//! Figures render to PNG with text, show inline in evcxr, save to files; the device entry point
//! loads libtorch's CUDA backend.

use sgm::prelude::*;

fn non_white_share(fig: &plots::Figure) -> f64 {
    let png = fig.png().unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), fig.size());
    let px = &buf[..info.buffer_size()];
    px.chunks(3).filter(|p| p.iter().any(|c| *c < 250)).count() as f64 / (px.len() / 3) as f64
}

#[test]
fn figures_render_as_png() {
    let donut = Donut::default();
    let bounds = [-4.0, 4.0, -4.0, 4.0];
    let density =
        DensityMap::of_log_density("density", |x| donut.log_density(x), bounds, 60).unwrap();
    let x = donut.sample(500, Device::Cpu).unwrap();
    let scatter = Scatter::new("samples", bounds)
        .unwrap()
        .points("exact", &x)
        .unwrap();
    let field = VectorField::of_score("score", &donut, 0.0, bounds, 15).unwrap();
    let curves = Curves {
        title: "loss".into(),
        series: vec![("train".into(), vec![(1.0, 3.0), (2.0, 2.0), (3.0, 1.5)])],
    };
    let hist = Histogram::new("radius", (2.0, 3.2), 30)
        .unwrap()
        .sample("exact", &metrics::radii(&x))
        .unwrap();
    let fig = plots::row(&[&density, &scatter, &field, &curves, &hist]).unwrap();
    assert_eq!(fig.size(), (5 * plots::PANEL_SIZE.0, plots::PANEL_SIZE.1));
    // The density panel is mostly coloured; all panels together draw a good share of pixels.
    assert!(non_white_share(&density.figure().unwrap()) > 0.5);
    // Five panels of axes, dots, arrows and lines: a blank figure would be about 2% ink.
    let share = non_white_share(&fig);
    assert!(share > 0.1, "{share}");
    let dir = std::env::temp_dir().join(format!("sgm-fig-{}", std::process::id()));
    let path = dir.join("nested/fig.png");
    fig.save(&path).unwrap();
    assert_eq!(&std::fs::read(&path).unwrap()[..4], b"\x89PNG");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn text_is_drawn() {
    // A curve panel with and without a title differ: the embedded font renders.
    let with = |title: &str| Curves {
        title: title.into(),
        series: vec![("a".into(), vec![(0.0, 0.0), (1.0, 1.0)])],
    };
    let a = non_white_share(&with("").figure().unwrap());
    let b = non_white_share(&with("A LONG TITLE WITH MANY LETTERS").figure().unwrap());
    assert!(b > a, "{b} vs {a}");
}

#[test]
fn bad_plot_input_is_an_error() {
    let three_d = Tensor::zeros([4, 3], (Kind::Float, Device::Cpu));
    let err = Scatter::new("s", [0.0, 1.0, 0.0, 1.0])
        .unwrap()
        .points("p", &three_d)
        .unwrap_err();
    assert!(err.to_string().contains("[4, 3]"), "{err}");
    assert!(plots::grid(&[], 1, (10, 10)).is_err());
    assert!(Histogram::new("h", (1.0, 1.0), 10).is_err());
}

#[test]
fn device_loads_libtorch_cuda_backend() {
    let device = sgm::device();
    match sgm::device::load_cuda_backend() {
        sgm::device::CudaBackend::Loaded(path) => {
            // The library is mapped into this process.
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            assert!(maps.contains("libtorch_cuda.so"), "not mapped");
            assert!(path.ends_with("libtorch_cuda.so"));
        }
        other => panic!("the PyPI wheel ships libtorch_cuda.so, but: {other:?}"),
    }
    // On this machine there is no GPU: the CPU is picked; with one, CUDA.
    assert_eq!(device == Device::Cpu, !tch::Cuda::is_available());
}
