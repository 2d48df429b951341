use sgm::images::{self, Scaling};
use sgm::langevin::{annealed_langevin, AnnealedConfig, Init};
use sgm::losses::{multiscale_dsm_loss, MultiScaleConfig};
use sgm::nets::*;
use sgm::noise::Sigmas;
use sgm::prelude::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args[1].clone(); let epochs: usize = args[2].parse().unwrap();
    let set = images::mnist_5k().unwrap();
    let (tr, te) = set.shuffle_split(0.9, 0).unwrap();
    let x = Scaling::MinusOneOne.apply(&tr.images); let xt = Scaling::MinusOneOne.apply(&te.images);
    let sigmas = Sigmas::geometric(2.0, 0.02, 10).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let model: Box<dyn Score> = if which == "unet" { Box::new(BlogUnet::new(&vs.root(), &UnetConfig::default()).unwrap()) }
      else if which == "v2" { Box::new(Ncsnv2Unet::new(&vs.root(), &UnetConfig::default()).unwrap()) }
      else { Box::new(ConditionedSimpleResnet::new(&vs.root(), &ResnetConfig { n_filters: 32, n_blocks: 4, ..ResnetConfig::homework(sigmas.clone()) }).unwrap()) };
    let cfg = MultiScaleConfig::new(sigmas.clone());
    let tc = TrainConfig { epochs, batch_size: 128, lr: 1e-3, seed: Some(0), ..Default::default() };
    let h = train(&vs, &x, Some(&xt), &tc, |b| multiscale_dsm_loss(model.as_ref(), b, &cfg), &mut training::print_progress(std::time::Duration::from_secs(30))).unwrap();
    println!("train {:.1}s", h.seconds);
    let x0 = Init::Uniform { low: -1.0, high: 1.0 }.draw(&[100, 1, 28, 28], Device::Cpu).unwrap();
    for eps in [2e-5, 8e-5] {
    let t = std::time::Instant::now();
    let out = annealed_langevin(model.as_ref(), &sigmas, &x0, &AnnealedConfig { steps_per_level: 100, eps, denoise: true, seed: Some(1), ..AnnealedConfig::ncsn() }).unwrap();
    println!("sample {:.1}s", t.elapsed().as_secs_f64());
    plots::ImageGrid::new("s", &Scaling::MinusOneOne.invert(&out.samples), 10).unwrap().figure_scaled(2).unwrap().save(format!("/tmp/mnist_{which}_{epochs}_{eps}.png")).unwrap();
    }
}
