//! The `tollgate` binary.

/// mimalloc instead of glibc's allocator: the database driver allocates every column value on its
/// own thread and the runtime frees them on another, a pattern glibc's per-thread arenas handle
/// poorly (measured in docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tollgate::main_entry()
}
