//! The task's workspace, the same for every tier: a directory the caller
//! gives (checked so that it is not a part of the host system or warden's
//! state), or a fresh one under the state directory, removed afterwards.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use warden_core::TaskId;

use crate::{BackendError, Result};

/// Makes `<state>/workspaces/<id>`, mode 0700, owned by the task's
/// host id. The state directory is made root-only once.
pub fn make_temp(state_dir: &Path, id: &TaskId, owner: u32) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = state_dir.join("workspaces");
    let ws = parent.join(id.as_str());
    let mut mkdir = std::fs::DirBuilder::new();
    mkdir.mode(0o700);
    if let Err(e) = mkdir.create(&ws) {
        match e.kind() {
            std::io::ErrorKind::AlreadyExists => return Err(BackendError::Duplicate { id: id.to_string() }),
            std::io::ErrorKind::NotFound => {
                // First use of this state directory: only root may look in.
                mkdir
                    .recursive(true)
                    .create(&parent)
                    .map_err(BackendError::io(format!("create {}", parent.display())))?;
                for dir in [state_dir, parent.as_path()] {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                        .map_err(BackendError::io(format!("restrict {}", dir.display())))?;
                }
                mkdir.recursive(false).create(&ws).map_err(BackendError::io(format!("create {}", ws.display())))?;
            }
            _ => return Err(BackendError::io(format!("create {}", ws.display()))(e)),
        }
    }
    if let Err(e) = std::os::unix::fs::chown(&ws, Some(owner), Some(owner)) {
        let _ = std::fs::remove_dir(&ws);
        return Err(BackendError::io(format!("hand {} to the task", ws.display()))(e));
    }
    Ok(ws)
}

/// Refuses workspaces that would hand the task a part of the host system
/// or warden's own state. `path` has passed the lexical checks of the spec.
pub fn check(path: &Path, state_dir: &Path) -> Result<()> {
    let refuse = |why: &str| {
        Err(BackendError::Spawn(warden_linux::sandbox::SpawnError::Workspace {
            path: path.to_owned(),
            message: why.to_owned(),
        }))
    };
    let abs = match std::path::absolute(path) {
        Ok(p) => p,
        Err(e) => return refuse(&e.to_string()),
    };
    let state = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    if abs.starts_with(&state) || abs.starts_with(state_dir) {
        return refuse("is inside warden's state directory");
    }
    const SYSTEM_TREES: [&str; 13] = [
        "/proc", "/sys", "/dev", "/boot", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/run",
        "/var/run",
    ];
    const SYSTEM_DIRS: [&str; 5] = ["/", "/root", "/home", "/var", "/tmp"];
    if SYSTEM_TREES.iter().any(|t| abs.starts_with(t)) || SYSTEM_DIRS.iter().any(|d| abs == Path::new(d)) {
        return refuse("is a system directory; give a directory of the task's own");
    }
    Ok(())
}
