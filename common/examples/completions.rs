//! Write the shell completions of the four tools (bash, zsh, fish):
//! `cargo run --example completions -p jlayers -- completions` regenerates the
//! committed ones; a test fails when they are stale.

fn main() -> std::process::ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .unwrap_or_else(|| "completions".into());
    match jlayers::cmd::write_completions(std::path::Path::new(&dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("completions: {}: {e}", std::path::Path::new(&dir).display());
            std::process::ExitCode::FAILURE
        }
    }
}
