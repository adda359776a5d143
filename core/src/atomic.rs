//! Writing files so that a crash never leaves one half-written.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file beside it: write, fsync, rename, then
/// fsync the directory. Readers see the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let tmp = path.with_extension(format!("{ext}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let tmp = tempfile::Builder::new().prefix("topolab-atomic-").tempdir().unwrap();
        let d = tmp.path();
        let f = d.join("a.json");
        super::write_atomic(&f, b"one").unwrap();
        super::write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 1);
    }
}
