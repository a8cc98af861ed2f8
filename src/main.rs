fn main() -> std::process::ExitCode {
    pvc_clone_guard::cli::main()
}
