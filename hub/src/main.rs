//! The `hub` binary: a thin wrapper over `hub::cli` (see the root Cargo.toml for why the root
//! package builds it).

fn main() -> std::process::ExitCode {
    hub::cli::main()
}
