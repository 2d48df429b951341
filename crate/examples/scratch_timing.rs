use sgm::nets::*;
use sgm::noise::Sigmas;
use sgm::losses::{multiscale_dsm_loss, MultiScaleConfig};
use sgm::prelude::*;
use tch::nn::OptimizerConfig;
use std::time::Instant;
fn time_model(name: &str, vs: &nn::VarStore, model: &dyn Score, sigmas: &Sigmas, batch: i64) {
    let cfg = MultiScaleConfig::new(sigmas.clone());
    let mut opt = nn::Adam::default().build(vs, 1e-3).unwrap();
    let x = Tensor::rand([batch, 1, 28, 28], (Kind::Float, Device::Cpu));
    for _ in 0..2 { let l = multiscale_dsm_loss(model, &x, &cfg).unwrap(); opt.backward_step(&l); }
    let t = Instant::now(); let n = 5;
    for _ in 0..n { let l = multiscale_dsm_loss(model, &x, &cfg).unwrap(); opt.backward_step(&l); }
    let train = t.elapsed().as_secs_f64() / n as f64;
    let xs = Tensor::rand([100, 1, 28, 28], (Kind::Float, Device::Cpu));
    let t = Instant::now();
    tch::no_grad(|| for _ in 0..n { let _ = model.score_at(&xs, 0.1).unwrap(); });
    let eval = t.elapsed().as_secs_f64() / n as f64;
    println!("{name}: train step (batch {batch}) {train:.3}s, eval batch 100 {eval:.3}s");
}
fn main() {
    let sigmas = Sigmas::geometric(1.0, 0.01, 10).unwrap();
    for (f, b) in [(64, 4), (32, 4), (32, 2)] {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = ConditionedSimpleResnet::new(&vs.root(), &ResnetConfig { n_filters: f, n_blocks: b, ..ResnetConfig::homework(sigmas.clone()) }).unwrap();
        time_model(&format!("resnet {f}x{b}"), &vs, &m, &sigmas, 128);
    }
    let vs = nn::VarStore::new(Device::Cpu);
    let m = BlogUnet::new(&vs.root(), &UnetConfig::default()).unwrap();
    time_model("blog unet 16", &vs, &m, &sigmas, 120);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Ncsnv2Unet::new(&vs.root(), &UnetConfig::default()).unwrap();
    time_model("ncsnv2 unet 16", &vs, &m, &sigmas, 120);
}
