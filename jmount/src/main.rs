//! jmount(8): stack each jail's layers (null mount, then union mount of its upper dir).

fn main() -> std::process::ExitCode {
    jlayers::cmd::jmount::main(&jlayers::cli::parse("jmount")).into()
}
