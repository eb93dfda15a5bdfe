//! The `adjoint` binary: a thin shell over [`adjoint::cli`].

use clap::Parser;

fn main() {
    // A bug must not show users a backtrace: report it as an internal failure (exit 1).
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        eprintln!("adjoint: internal error: {msg}");
    }));
    let cli = adjoint::cli::Cli::parse();
    // Expressions are processed recursively: give the work a large stack (their size is
    // bounded by the parser, so this bounds the depth).
    let worker = std::thread::Builder::new().stack_size(256 << 20).spawn(move || adjoint::cli::run(cli));
    let code = match worker.map(|w| w.join()) {
        Ok(Ok(Ok(()))) => 0,
        Ok(Ok(Err(e))) => {
            eprintln!("adjoint: {e}");
            e.exit_code()
        }
        Ok(Err(_)) => 1, // the panic hook has reported it
        Err(e) => {
            eprintln!("adjoint: internal error: cannot start a worker thread: {e}");
            1
        }
    };
    std::process::exit(code);
}
