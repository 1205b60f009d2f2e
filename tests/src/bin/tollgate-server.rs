//! The `tollgate` program, built inside the test package so integration tests can spawn (and
//! SIGKILL) it through `CARGO_BIN_EXE_tollgate-server`.

fn main() -> std::process::ExitCode {
    tollgate::main_entry()
}
