use std::process::ExitCode;

// glibc malloc showed up as ~11 % of a Pingora proxy's CPU under load (shared/PINGORA-NOTES.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tenantgate::cli::main()
}
