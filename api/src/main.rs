//! The `tollgate` binary.

fn main() -> std::process::ExitCode {
    tollgate::main_entry()
}
