fn main() -> std::process::ExitCode {
    query_api::cli::main()
}
