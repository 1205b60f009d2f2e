//! The `tollgate` program, built inside the test package so integration tests can spawn (and
//! SIGKILL) it through `CARGO_BIN_EXE_tollgate-server`.

/// The same allocator as the shipped binary (`api/src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tollgate::main_entry()
}
