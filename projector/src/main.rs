fn main() -> std::process::ExitCode {
    projector::cli::main()
}

/// mimalloc, not glibc's allocator: a rebuild decodes and frees millions of small JSON nodes,
/// and measured side by side (1M events) it rebuilt 17 % faster (43.8k against 37.3k events/s).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
