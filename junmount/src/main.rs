//! junmount(8): take each jail's layers down in exact reverse order.

fn main() -> std::process::ExitCode {
    jlayers::cmd::junmount::main(&jlayers::cli::parse("junmount")).into()
}
