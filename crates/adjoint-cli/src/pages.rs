//! Files the commands write besides run folders (`--html` pages, `graph`'s and `inspect`'s
//! pictures), under one rule: every target is checked before any work (a folder, a missing
//! parent folder, or an existing file without `--force` is bad input, exit 2), and each file
//! is written atomically. A write that fails because of the target (no permission, a
//! read-only file system) is bad input too (exit 2); one that fails for another reason (a
//! full disk) is an internal failure (exit 1).

use std::path::Path;

use adjoint_explain::html::Page;

use crate::CliError;

/// Refuses a target `path` (given with `flag`) that cannot or may not be written.
pub fn check_target(flag: &str, path: &Path, force: bool) -> Result<(), CliError> {
    let usage = |m: &str| Err(CliError::Usage(format!("{flag} {}: {m}", path.display())));
    if path.is_dir() {
        return usage("is a folder; give a file name");
    }
    // A device or a pipe is not replaced, even with --force (writing atomically renames a
    // new file over the name: --html /dev/null would replace the system's /dev/null).
    if path.exists() && !path.is_file() {
        return usage("is not a regular file (a device or a pipe); give a file name");
    }
    if path.exists() && !force {
        return usage("exists; pass --force to replace it");
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return usage("its folder does not exist");
    }
    // Whether the folder takes a new file is known only by trying: permissions, read-only
    // mounts and attributes all say no the same way. Checked now, before any work.
    let probe = parent.join(format!(".adjoint-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return usage(&format!("its folder cannot be written ({e})")),
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (checked with [`check_target`]), mapping a failure
/// to its exit code.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    adjoint::io::write_atomic(path, bytes).map_err(|e| {
        let target = match &e {
            adjoint::io::IoError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::ReadOnlyFilesystem
                    | std::io::ErrorKind::IsADirectory
                    | std::io::ErrorKind::NotADirectory
            ),
            _ => false,
        };
        if target {
            CliError::Usage(format!("cannot write {}: {e}", path.display()))
        } else {
            CliError::writing(e)
        }
    })
}

/// Writes `page` to `path` (checked with [`check_target`]) and says so on stderr.
pub fn write(path: &Path, page: &Page) -> Result<(), CliError> {
    write_file(path, page.to_html().as_bytes())?;
    eprintln!("wrote {} ({} steps)", path.display(), page.frames.len());
    Ok(())
}
