//! Figures render to PNG with text, show inline in evcxr, save to files; the device entry point
//! loads libtorch's CUDA backend, and the device choice (from `SGM_DEVICE`, the backend and the
//! visible GPUs) gives the right device and reason in every case.

use sgm::device::{CudaBackend, Reason};
use sgm::prelude::*;
use sgm_tests::test_device;

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
    let x = donut.sample(500, test_device()).unwrap();
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
    let dir = sgm_tests::tmpdir("fig");
    let path = dir.join("nested/fig.png");
    fig.save(&path).unwrap();
    assert_eq!(&std::fs::read(&path).unwrap()[..4], b"\x89PNG");
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
    let three_d = Tensor::zeros([4, 3], (Kind::Float, test_device()));
    let err = Scatter::new("s", [0.0, 1.0, 0.0, 1.0])
        .unwrap()
        .points("p", &three_d)
        .unwrap_err();
    assert!(err.to_string().contains("[4, 3]"), "{err}");
    assert!(plots::grid(&[], 1, (10, 10)).is_err());
    assert!(Histogram::new("h", (1.0, 1.0), 10).is_err());
}

#[test]
fn device_loads_libtorch_cuda_backend_and_says_why() {
    let choice = sgm::device::device_choice();
    match sgm::device::load_cuda_backend() {
        CudaBackend::Loaded(path) => {
            // The library is mapped into this process.
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            assert!(maps.contains("libtorch_cuda.so"), "not mapped");
            assert!(path.ends_with("libtorch_cuda.so"));
        }
        other => panic!("the PyPI wheel ships libtorch_cuda.so, but: {other:?}"),
    }
    // Replaces `device == Cpu` compared with `!Cuda::is_available()`, the very call `device()`
    // made. The reason must match the machine: with the backend loaded, the CPU is chosen
    // only because no GPU is visible (a mix-up of the reasons, e.g. "absent" for a loaded
    // backend, fails here), and `describe` tells the notebook so.
    if std::env::var_os("SGM_DEVICE").is_none() {
        let choice = choice.unwrap();
        if tch::Cuda::device_count() > 0 {
            assert_eq!(
                (choice.device, choice.reason),
                (Device::Cuda(0), Reason::GpuAvailable)
            );
        } else {
            assert_eq!(
                (choice.device, &choice.reason),
                (Device::Cpu, &Reason::NoCudaDevice)
            );
            let text = sgm::device::describe(Device::Cpu);
            assert!(text.contains("no CUDA device is visible"), "{text}");
        }
        assert_eq!(sgm::device(), choice.device);
        assert_eq!(sgm::device::try_device().unwrap(), choice.device);
    }
}

#[test]
fn device_choice_covers_every_case() {
    // The choice as a pure function of (SGM_DEVICE, backend, visible GPUs), so each case runs
    // on any machine. Bugs it catches: a GPU asked for but absent silently becoming the CPU
    // (the old behaviour), cuda:N accepted for N ≥ the GPU count, SGM_DEVICE=cpu ignored on a
    // GPU machine, a reason that does not match the backend's state.
    use sgm::device::{choose, DeviceRequest::*};
    let loaded = CudaBackend::Loaded("/x/libtorch_cuda.so".into());
    let failed = CudaBackend::Failed("libcudart.so.12: cannot open shared object".into());
    let ok = |r, b: &CudaBackend, gpus| {
        let c = choose(r, b, gpus).unwrap();
        (c.device, c.reason)
    };
    // Unset: the first GPU when there is one, else the CPU with the backend's story.
    assert_eq!(
        ok(None, &loaded, 2),
        (Device::Cuda(0), Reason::GpuAvailable)
    );
    assert_eq!(ok(None, &loaded, 0), (Device::Cpu, Reason::NoCudaDevice));
    assert_eq!(
        ok(None, &CudaBackend::Absent, 0),
        (Device::Cpu, Reason::CudaAbsent)
    );
    let (device, reason) = ok(None, &failed, 0);
    assert_eq!(device, Device::Cpu);
    assert!(reason.to_string().contains("libcudart.so.12"), "{reason}");
    // cpu: the CPU even with GPUs.
    assert_eq!(ok(Some(Cpu), &loaded, 2), (Device::Cpu, Reason::ForcedCpu));
    // cuda, cuda:N: that GPU, or an error naming why not.
    assert_eq!(
        ok(Some(Cuda(None)), &loaded, 1),
        (Device::Cuda(0), Reason::RequestedGpu)
    );
    assert_eq!(
        ok(Some(Cuda(Some(1))), &loaded, 2),
        (Device::Cuda(1), Reason::RequestedGpu)
    );
    for (request, backend, gpus, why) in [
        (Cuda(None), &loaded, 0, "no CUDA device is visible"),
        (Cuda(Some(0)), &CudaBackend::Absent, 0, "CPU-only build"),
        (Cuda(None), &failed, 0, "libcudart.so.12"),
        (Cuda(Some(2)), &loaded, 2, "2 CUDA device(s) visible"),
    ] {
        match choose(Some(request), backend, gpus) {
            Err(e @ Error::DeviceUnavailable { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&request.to_string()) && msg.contains(why),
                    "{msg}"
                );
            }
            other => panic!("{request} with {gpus} GPUs: {other:?}"),
        }
    }
}
