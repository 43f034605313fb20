//! Reading and writing local files with a size bound and safe permissions.
//!
//! Every file the client reads (keys, manifests, bundles) goes through
//! [`read_bounded`], so a wrong path pointing at a huge file fails with a
//! clear error instead of exhausting memory. Secret files are created with
//! mode 0600 and never overwrite an existing file.

use crate::local_error::LocalError;
use std::io::{Read, Write};
use std::path::Path;

/// Unix permissions of a secret key file: owner read/write only.
pub const SECRET_FILE_MODE: u32 = 0o600;
/// Unix permissions of a public file.
pub const PUBLIC_FILE_MODE: u32 = 0o644;

/// Reads `path`, refusing files larger than `bytes_max`.
pub fn read_bounded(path: &Path, bytes_max: u64) -> Result<Vec<u8>, LocalError> {
    let read_error = |source| LocalError::FileRead { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    // Read one byte past the bound to tell "exactly at the bound" from "over it".
    file.take(bytes_max.saturating_add(1)).read_to_end(&mut bytes).map_err(read_error)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > bytes_max {
        return Err(LocalError::FileTooLarge { path: path.to_owned(), bytes_max });
    }
    Ok(bytes)
}

/// Creates `path` with `mode` (on Unix) and writes `bytes`. Refuses to
/// overwrite an existing file when `is_create_new`.
pub fn write(path: &Path, bytes: &[u8], mode: u32, is_create_new: bool) -> Result<(), LocalError> {
    let write_error = |source| LocalError::FileWrite { path: path.to_owned(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if is_create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(write_error)?;
    file.write_all(bytes).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_bounded_refuses_files_over_the_bound() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").expect("write");
        assert_eq!(read_bounded(&path, 5).expect("at the bound is fine"), b"12345");
        assert!(matches!(read_bounded(&path, 4), Err(LocalError::FileTooLarge { bytes_max: 4, .. })));
    }

    #[test]
    fn read_bounded_names_a_missing_file() {
        let error = read_bounded(Path::new("/nonexistent/keel/file"), 10).expect_err("missing");
        assert!(error.to_string().contains("/nonexistent/keel/file"), "{error}");
    }

    #[test]
    fn write_new_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        write(&path, b"a", SECRET_FILE_MODE, true).expect("first write");
        assert!(matches!(write(&path, b"b", SECRET_FILE_MODE, true), Err(LocalError::FileWrite { .. })));
        write(&path, b"c", SECRET_FILE_MODE, false).expect("overwrite allowed");
        assert_eq!(std::fs::read(&path).expect("read"), b"c");
    }
}
