//! Reading a definition file: only regular files, and never more than the size limit, whatever
//! size the file system reports.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use tollgate_workflows::parse::MAX_DEFINITION_BYTES;
use tollgate_workflows::{DefinitionError, parse_definition, read_file};

use crate::grant_with;

/// A fresh directory under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tollgate-workflows-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch directory");
        Self(dir)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("write scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `read_file`, failing the test instead of hanging if it blocks.
fn read_quickly(path: &Path) -> Result<String, DefinitionError> {
    let (tx, rx) = mpsc::channel();
    let owned = path.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(read_file(&owned));
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("read_file({}) blocked", path.display()))
}

fn read_error(path: &Path) -> DefinitionError {
    let e = read_quickly(path).expect_err("the file must be refused");
    assert_eq!(e.source, path.display().to_string(), "the error names the file: {e}");
    assert_eq!(e.path, "", "{e}");
    e
}

#[test]
fn a_regular_file_is_read_and_its_byte_order_mark_accepted() {
    let dir = Scratch::new("regular");
    let path = dir.write("a.yaml", format!("\u{feff}{}", grant_with("")));
    let text = read_quickly(&path).expect("read");
    let def = parse_definition(&path.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(def.key, "t");
}

#[test]
fn the_size_limit_is_exact() {
    let dir = Scratch::new("size");
    let at_limit = dir.write("at.yaml", "#".repeat(MAX_DEFINITION_BYTES));
    assert_eq!(read_quickly(&at_limit).expect("at the limit").len(), MAX_DEFINITION_BYTES);
    let over = dir.write("over.yaml", "#".repeat(MAX_DEFINITION_BYTES + 1));
    let e = read_error(&over);
    assert_eq!((e.line, e.column), (None, None));
    assert!(e.message.contains("larger than the limit of 262144 bytes (256 KiB)"), "{e}");
}

#[test]
fn only_utf8_text_is_read() {
    let dir = Scratch::new("utf8");
    let path = dir.write("latin1.yaml", b"key: t\ndescription: caf\xe9\n");
    let e = read_error(&path);
    assert!(e.message.contains("not UTF-8"), "{e}");
    assert_eq!((e.line, e.column), (Some(2), Some(17)), "{e}");
}

#[test]
fn a_missing_file_or_a_directory_is_refused_by_name() {
    let dir = Scratch::new("kinds");
    let e = read_error(&dir.0.join("missing.yaml"));
    assert!(e.message.starts_with("cannot read"), "{e}");
    std::fs::create_dir(dir.0.join("sub.yaml")).expect("mkdir");
    let e = read_error(&dir.0.join("sub.yaml"));
    assert!(e.message.contains("not a regular file (a directory)"), "{e}");
}

#[cfg(unix)]
#[test]
fn devices_and_symlinks_to_them_are_refused_without_reading() {
    let e = read_error(Path::new("/dev/zero"));
    assert!(e.message.contains("not a regular file (a character device)"), "{e}");
    assert_eq!(e.to_string(), format!("/dev/zero: {}", e.message));

    let dir = Scratch::new("symlinks");
    let link = dir.0.join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
    let e = read_error(&link);
    assert!(e.message.contains("not a regular file (a character device)"), "{e}");

    // A symlink to a regular file is followed.
    let target = dir.write("target.txt", grant_with(""));
    let link = dir.0.join("linked.yaml");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    assert_eq!(read_quickly(&link).expect("read through the link"), grant_with(""));
}

#[cfg(unix)]
#[test]
fn a_fifo_is_refused_instead_of_blocking() {
    let dir = Scratch::new("fifo");
    let fifo = dir.0.join("a.yaml");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
    let e = read_error(&fifo);
    assert!(e.message.contains("not a regular file (a FIFO)"), "{e}");
}

#[cfg(target_os = "linux")]
#[test]
fn files_reporting_no_size_are_still_read_within_the_limit() {
    // /proc files report a length of 0; what counts is what is read.
    let text = read_quickly(Path::new("/proc/self/status")).expect("read /proc/self/status");
    assert!(text.contains("Name:"), "{text}");
}
