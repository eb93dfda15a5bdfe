//! Where `--html` pages go: the target is checked before any work (a folder, a missing
//! parent folder, or an existing file without `--force` is bad input, exit 2), and the page
//! is written atomically.

use std::path::Path;

use adjoint_explain::html::Page;

use crate::CliError;

/// Refuses a page target that cannot or may not be written.
pub fn check_target(path: &Path, force: bool) -> Result<(), CliError> {
    let usage = |m: &str| Err(CliError::Usage(format!("--html {}: {m}", path.display())));
    if path.is_dir() {
        return usage("is a folder; give a file name such as page.html");
    }
    if path.exists() && !force {
        return usage("exists; pass --force to replace it");
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return usage("its folder does not exist");
    }
    Ok(())
}

/// Writes `page` to `path` (checked with [`check_target`]) and says so on stderr.
pub fn write(path: &Path, page: &Page) -> Result<(), CliError> {
    adjoint::io::write_atomic(path, page.to_html().as_bytes()).map_err(CliError::writing)?;
    eprintln!("wrote {} ({} steps)", path.display(), page.frames.len());
    Ok(())
}
