fn main() -> std::process::ExitCode {
    command_api::cli::main()
}
