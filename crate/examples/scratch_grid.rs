use sgm::images;
use sgm::prelude::*;
fn main() {
    let d = images::mnist_5k().unwrap();
    let g = plots::ImageGrid::new("digits", &d.images.narrow(0, 0, 20), 10).unwrap();
    let f = g.figure_scaled(2).unwrap();
    println!("{:?}", f.size());
    f.save("/tmp/grid_digits.png").unwrap();
}
