//! Compiles `csrc/fused.cpp` (libtorch's fused Adam and foreach kernels, which tch does not
//! bind) against the libtorch that torch-sys links: `$LIBTORCH` (set by `.cargo/config.toml`
//! to the PyPI wheel's `torch/` folder), with torch-sys's own flags.
//!
//! With a CUDA 13 libtorch (the wheel ships `ATen/cuda/CUDAGraph.h`, `libtorch_cuda.so` and, in
//! `nvidia/cu13/`, the CUDA runtime's headers and library, to which the set-up adds the
//! `crt/` and `nv/` headers of `nvidia-cuda-crt` and `nvidia-cuda-cccl`), also builds
//! `csrc/cuda_graph.cpp` into a shared library of its own, `$SGM_CUDA_GRAPH_SO`, which the crate
//! embeds and loads only on a GPU ([`crate::cuda_graph`]). Without them that file is empty (with
//! a cargo warning saying what is missing) and CUDA graphs are reported as not built.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=csrc/fused.cpp");
    println!("cargo:rerun-if-changed=csrc/cuda_graph.cpp");
    println!("cargo:rerun-if-changed=csrc/guarded.h");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let libtorch = PathBuf::from(
        std::env::var("LIBTORCH").expect("LIBTORCH is unset: run kernel-setup/setup.sh first"),
    );
    let include = libtorch.join("include");
    assert!(
        include.join("ATen/ops/_fused_adam.h").exists(),
        "{} has no ATen/ops/_fused_adam.h: LIBTORCH must be a libtorch with its headers",
        include.display()
    );
    let build = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .pic(true)
            .warnings(false)
            .include(&include)
            .include(include.join("torch/csrc/api/include"))
            .flag("-std=c++17")
            .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
            .flag("-DGLOG_USE_GLOG_EXPORT");
        b
    };
    build().file("csrc/fused.cpp").compile("sgm_fused");

    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("libsgm_cuda_graph.so");
    match cuda_runtime(&libtorch) {
        Ok(cuda) => {
            let mut cmd = build()
                .include(cuda.join("include"))
                .get_compiler()
                .to_command();
            cmd.arg("-shared")
                .arg("-O2")
                .arg("-s")
                .arg("csrc/cuda_graph.cpp")
                .arg("-o")
                .arg(&out)
                .arg(format!("-L{}", libtorch.join("lib").display()))
                .arg(format!("-L{}", cuda.join("lib").display()))
                .args(["-ltorch_cuda", "-lc10_cuda", "-ltorch_cpu", "-lc10"])
                .arg("-l:libcudart.so.13");
            let status = cmd.status().expect("cannot run the C++ compiler");
            assert!(
                status.success(),
                "building csrc/cuda_graph.cpp failed: {cmd:?}"
            );
        }
        Err(missing) => {
            println!("cargo:warning=CUDA graphs not built: {missing}");
            std::fs::write(&out, b"").unwrap();
        }
    }
    println!("cargo:rustc-env=SGM_CUDA_GRAPH_SO={}", out.display());
}

/// The CUDA runtime next to a CUDA libtorch wheel (`site-packages/nvidia/cu13`), when this
/// libtorch has CUDA graphs and every header the runtime's headers include is there; else what
/// is missing.
fn cuda_runtime(libtorch: &Path) -> Result<PathBuf, String> {
    let need = |p: PathBuf| {
        if p.exists() {
            Ok(())
        } else {
            Err(format!("no {}", p.display()))
        }
    };
    need(libtorch.join("include/ATen/cuda/CUDAGraph.h"))?;
    need(libtorch.join("lib/libtorch_cuda.so"))?;
    let nvidia = libtorch
        .canonicalize()
        .map_err(|e| format!("{}: {e}", libtorch.display()))?
        .parent()
        .ok_or("LIBTORCH has no parent folder")?
        .join("nvidia/cu13");
    for file in [
        "include/cuda_runtime_api.h",
        "include/crt/host_config.h", // nvidia-cuda-crt
        "include/nv/target",         // nvidia-cuda-cccl
        "lib/libcudart.so.13",
    ] {
        need(nvidia.join(file))?;
    }
    Ok(nvidia)
}
