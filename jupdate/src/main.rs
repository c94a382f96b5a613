//! jupdate(8): run portmaster (or any updater) inside each jail with its layers in
//! place, then restore what was found.

fn main() -> std::process::ExitCode {
    jlayers::cmd::jupdate::main(&jlayers::cli::parse("jupdate")).into()
}
