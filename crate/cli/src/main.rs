//! The `sgm` command line; everything is in the `sgm_cli` library (see its docs).

fn main() -> std::process::ExitCode {
    sgm_cli::run()
}
