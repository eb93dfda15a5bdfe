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
    let code = match std::panic::catch_unwind(|| adjoint::cli::run(cli)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("adjoint: {e}");
            e.exit_code()
        }
        Err(_) => 1,
    };
    std::process::exit(code);
}
