fn main() -> std::process::ExitCode {
    command_api::cli::main()
}

/// mimalloc, not glibc's allocator, as in the other two services: glibc's malloc and free took
/// about a tenth of the command API's CPU per share.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
