//! jclean(8): prune the upper dirs of union layers, in parallel, and report.

fn main() -> std::process::ExitCode {
    jlayers::cmd::jclean::main(&jlayers::cli::parse("jclean")).into()
}
