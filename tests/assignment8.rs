//! `sgm grade` end to end on assignment 8 (`a8_score_models`, seed 000): the source, the
//! untouched release, a submission with one plausible fault per task, each of which its
//! visible check lets through and its hidden check catches, and one whose EMA update moves the
//! parameters, which the visible check catches, and whose sampler reuses one draw of noise for
//! every step of a scale, which only the hidden check's test of white noise catches. Graded in the bubblewrap sandbox
//! through the registered evcxr kernel at the grading budget; every task's points are asserted.
//! (Its own test binary: cargo runs test binaries one after another, so this grading run does
//! not compete for the two cores with homework 5's.)

use sgm::assignment;
use sgm_tests::fixtures::{assert_graded, edit, grade, message, report, summary, write};
use sgm_tests::tmpdir;
use std::path::PathBuf;

fn homework() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("notebooks/homework")
}

#[test]
fn assignment_8_fixtures_get_the_points_their_faults_allow() {
    let dir = tmpdir("assignment8-grade");
    let source_path = homework().join("source/a8_score_models.ipynb");
    let source = assignment::read_notebook(&source_path).unwrap();
    let release =
        assignment::read_notebook(&homework().join("release/a8_score_models.ipynb")).unwrap();

    let mut faults = source.clone();
    // Every sample divided by the first sample's σ: right in training (one σ per batch) and for
    // the visible check (all σ's doubled), wrong for a batch of mixed σ's.
    edit(
        &mut faults,
        "t1-net",
        "/ sigma.view([-1, 1, 1, 1])",
        "/ sigma.get(0)",
    );
    // ‖σ s + z‖² without the ½ of the improved paper's equation 2: still a scalar with gradients.
    edit(
        &mut faults,
        "t2-loss",
        "sum_dim_intlist(1, false, x.kind()) * 0.5)",
        "sum_dim_intlist(1, false, x.kind()) * 1.0)",
    );
    // ⌊·⌋ where technique 2 rounds up: one scale short of σ_L.
    edit(
        &mut faults,
        "t3-fns",
        "/ gamma.ln()).ceil()",
        "/ gamma.ln()).floor()",
    );
    // The original paper's step (α/2, √α) with the improved paper's ε: half the step.
    edit(
        &mut faults,
        "t4-langevin",
        "score(&x, &level) * alpha + x.randn_like() * (2.0 * alpha).sqrt()",
        "score(&x, &level) * (alpha / 2.0) + x.randn_like() * alpha.sqrt()",
    );
    // Technique 5's warm-up without its cap: m_n = (1 + n)/(10 + n) past the momentum m, so
    // late in a run the average hardly moves. The first update and training still look right.
    edit(
        &mut faults,
        "t5-ema",
        "self.momentum.min((1.0 + n) / (10.0 + n))",
        "(1.0 + n) / (10.0 + n)",
    );
    // Perturbed with σ² instead of σ.
    edit(
        &mut faults,
        "t6-fn",
        "images.randn_like() * sigmas[start]",
        "images.randn_like() * (sigmas[start] * sigmas[start])",
    );

    // The known pixels put back once per scale, after its steps, instead of after every step:
    // they end where they should, but the missing ones were drawn beside a wandering known part.
    edit(
        &mut faults,
        "t7-fn",
        "                x = &x * &missing + &known * mask;\n            }",
        "            }\n            x = &x * &missing + &known * mask;",
    );

    // The angles θ_j = j π/(2k) instead of (j/(k − 1)) π/2: every chain's noise is still
    // standard normal, but the last chain stops short of z_q and the neighbours share too much.
    edit(
        &mut faults,
        "t8-fn",
        "Tensor::linspace(0.0, std::f64::consts::FRAC_PI_2, k, (x.kind(), x.device()))",
        "(Tensor::arange(k, (x.kind(), x.device())) * (std::f64::consts::FRAC_PI_2 / k as f64))",
    );

    // An update that moves θ towards θ̄ instead of θ̄ towards θ: θ̄ − θ after it is the same, so
    // a check that read θ through the answer's own pairs after the update let it through; the
    // visible check copies θ from the store first.
    let mut moves_theta = source.clone();
    edit(
        &mut moves_theta,
        "t5-ema",
        "let _ = average.lerp_(parameter, weight);",
        "let _ = parameter.lerp_(average, weight);",
    );
    // A second, independent fault: one z drawn per scale and reused at each of its steps. Every
    // step still has mean α and variance 2α, so only the noise's correlation between successive
    // steps tells (the visible check, shape and order of the scales, passes).
    edit(
        &mut moves_theta,
        "t4-langevin",
        "            for _ in 0..steps {\n                x = &x + score(&x, &level) * alpha + x.randn_like() * (2.0 * alpha).sqrt();",
        "            let z = x.randn_like();\n            for _ in 0..steps {\n                x = &x + score(&x, &level) * alpha + &z * (2.0 * alpha).sqrt();",
    );

    let submissions = [
        write(&dir, "source", &source),
        write(&dir, "release", &release),
        write(&dir, "faults", &faults),
        write(&dir, "moves_theta", &moves_theta),
    ];
    let out = dir.join("graded");
    let stdout = grade(&source_path, &out, &submissions);

    let source_report = report(&out, "source");
    // The batch-norm question is graded by hand: pending until manual.csv gives its point.
    assert_graded(
        &source_report,
        &[
            ("task1.score_net", 2),
            ("task1.batch_norm", 0),
            ("task2.loss", 2),
            ("task3.noise_scales", 2),
            ("task4.annealed", 2),
            ("task5.ema", 2),
            ("task5.training", 1),
            ("task6.variations", 1),
            ("task7.inpainting", 2),
            ("task8.interpolation", 2),
        ],
        (16, 17),
        &["task1.batch_norm"],
    );

    let release_report = report(&out, "release");
    assert_eq!(release_report.total, 0, "{release_report:#?}");

    let f = report(&out, "faults");
    assert_graded(
        &f,
        &[
            ("task1.score_net", 1),
            ("task1.batch_norm", 0),
            ("task2.loss", 1),
            ("task3.noise_scales", 1),
            ("task4.annealed", 1),
            ("task5.ema", 1),
            ("task5.training", 1),
            ("task6.variations", 0),
            ("task7.inpainting", 1),
            ("task8.interpolation", 1),
        ],
        (8, 17),
        &["task1.batch_norm"],
    );
    // Each hidden check names what it found.
    for (task, says) in [
        ("task1.score_net", "differs by"),
        ("task2.loss", "expected E ½‖z‖² = d/2 = 1.5"),
        ("task3.noise_scales", "technique2_num_scales"),
        ("task4.annealed", "is the step x + α s + √(2α) z?"),
        ("task5.ema", "the momentum is min(m, (1 + n)/(10 + n))"),
        ("task6.variations", "perturb the images at sigmas[start]"),
        ("task7.inpainting", "put back after every Langevin step?"),
        ("task8.interpolation", "same z_p and z_q for every chain"),
    ] {
        assert!(
            message(&f, task).contains(says),
            "{task}: {}",
            message(&f, task)
        );
    }

    let m = report(&out, "moves_theta");
    for (task, want, says) in [
        ("task5.ema", 0, "update changed the parameters θ"),
        (
            "task4.annealed",
            1,
            "the noise of successive steps has correlation",
        ),
    ] {
        let got = m.tasks.iter().find(|t| t.id == task).map(|t| t.points);
        assert_eq!(got, Some(want), "{task}: {m:#?}");
        assert!(
            message(&m, task).contains(says),
            "{task}: {}",
            message(&m, task)
        );
    }

    // The last line sums each task up over the four: task6.variations (1 point) is full in the
    // source and moves_theta, the batch-norm question pending everywhere.
    assert_eq!(
        summary(&stdout, "task6.variations"),
        (4.into(), 0.into(), 2.into(), 0.5.into())
    );
    assert_eq!(
        summary(&stdout, "task1.batch_norm"),
        (0.into(), 4.into(), 0.into(), serde_json::Value::Null)
    );

    for r in [&source_report, &release_report, &f, &m] {
        println!(
            "{}: {} / {} in {:.0} s",
            r.submission, r.total, r.max, r.seconds
        );
    }
}
