//! Files a killed process never leaves half written: each is written under a temporary name
//! beside its place, flushed to the disk, then renamed over it (a rename within a folder is
//! atomic), so a reader sees the old file or the new one, whole.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The temporary name `path` is written under: `.NAME.partial` in the same folder.
fn partial(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.partial"))
}

/// Flushes a file or folder to the disk.
pub fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Writes `path` by calling `write` on a temporary path beside it, then flushes and renames it
/// into place.
pub fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = partial(path);
    write(&tmp)?;
    sync(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        sync(dir)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically ([`write_with`]).
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    write_with(path, |tmp| {
        std::fs::write(tmp, bytes.as_ref()).map_err(|e| Error::io(tmp, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write(&p, "old").unwrap();
        write(&p, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.json"]);
        // A failed write leaves the old file.
        let err = write_with(&p, |_| Err(Error::Invalid("no".into())));
        assert!(err.is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
    }
}
