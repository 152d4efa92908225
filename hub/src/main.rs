//! The `hub` binary: a thin wrapper over `hub::cli` (see the root Cargo.toml for why the root
//! package builds it).

/// Every request allocates its parse tree, canonical form and answer on a worker thread and frees
/// much of it on another; mimalloc keeps that off a shared arena's locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hub::cli::main()
}
