//! Compiles `csrc/fused.cpp` (libtorch's fused Adam and foreach kernels, which tch does not
//! bind) against the libtorch that torch-sys links: `$LIBTORCH` (set by `.cargo/config.toml`
//! to the PyPI wheel's `torch/` folder), with torch-sys's own flags.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/fused.cpp");
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
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/fused.cpp")
        .compile("sgm_fused");
}
