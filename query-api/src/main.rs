fn main() -> std::process::ExitCode {
    query_api::cli::main()
}

/// mimalloc, not glibc's allocator: a resolve allocates and frees many small strings and
/// buffers (headers, the view's JSON, the audit event), and glibc's allocator took about a
/// tenth of the audited resolve's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
