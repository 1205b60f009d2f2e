//! Reading a definition file: the crate's one piece of I/O, so that every caller (server start-up,
//! `tollgate workflows validate`) reads files by the same rules.

use std::fs::{File, FileType};
use std::io::Read;
use std::path::Path;

use crate::parse::{DefinitionError, MAX_DEFINITION_BYTES};

/// Reads one definition file, to hand to [`crate::parse_definition`].
///
/// Only a regular file is read (a symbolic link is followed and its target checked), and never
/// more than [`MAX_DEFINITION_BYTES`] bytes, whatever size the file system reports: a device, a
/// pipe or a `/proc` file reports 0. The file's type is checked before it is opened, because
/// opening a FIFO blocks until something writes to it.
///
/// # Errors
/// A [`DefinitionError`] whose `source` is `path`: the file cannot be read, is not a regular file,
/// is over the limit, or is not UTF-8 (with the line and column of the first bad byte).
pub fn read_file(path: &Path) -> Result<String, DefinitionError> {
    let fail = |line, column, message: String| DefinitionError {
        source: path.display().to_string(),
        line,
        column,
        path: String::new(),
        message,
    };
    let cannot_read = |e: std::io::Error| fail(None, None, format!("cannot read: {e}"));
    let not_regular = |t: FileType| {
        fail(None, None, format!("not a regular file ({}); a workflow definition must be a regular file", describe(t)))
    };

    let metadata = std::fs::metadata(path).map_err(cannot_read)?;
    if !metadata.is_file() {
        return Err(not_regular(metadata.file_type()));
    }
    let file = File::open(path).map_err(cannot_read)?;
    // The path may name something else by now: what counts is what was opened.
    let opened = file.metadata().map_err(cannot_read)?;
    if !opened.is_file() {
        return Err(not_regular(opened.file_type()));
    }
    let bytes = read_limited(file).map_err(|e| match e {
        Limited::Io(e) => cannot_read(e),
        Limited::TooLarge => {
            fail(None, None, format!("the file is larger than the limit of {MAX_DEFINITION_BYTES} bytes (256 KiB)"))
        }
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        // The prefix is valid UTF-8 by definition.
        let before = std::str::from_utf8(valid).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
        let byte = e.as_bytes().get(valid.len()).copied().unwrap_or_default();
        fail(Some(line), Some(column), format!("not UTF-8 text (byte 0x{byte:02X}); save the file as UTF-8"))
    })
}

/// Why [`read_limited`] stopped.
#[derive(Debug)]
enum Limited {
    Io(std::io::Error),
    TooLarge,
}

/// Reads at most [`MAX_DEFINITION_BYTES`] bytes, and one more to tell whether there are more.
fn read_limited(reader: impl Read) -> Result<Vec<u8>, Limited> {
    let limit = u64::try_from(MAX_DEFINITION_BYTES).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    reader.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(Limited::Io)?;
    if bytes.len() > MAX_DEFINITION_BYTES {
        return Err(Limited::TooLarge);
    }
    Ok(bytes)
}

/// What a file that is not a regular file is, for the error message.
fn describe(t: FileType) -> &'static str {
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "neither a file nor a directory"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_reader_stops_one_byte_past_the_limit() {
        // What `/dev/zero` or a `/proc` file would do: the reported size is no bound.
        assert!(matches!(read_limited(std::io::repeat(b'a')), Err(Limited::TooLarge)));
        let mut counted = std::io::repeat(b'a').take(10 * MAX_DEFINITION_BYTES as u64);
        assert!(matches!(read_limited(&mut counted), Err(Limited::TooLarge)));
        let left = counted.limit();
        assert_eq!(left, (10 * MAX_DEFINITION_BYTES - MAX_DEFINITION_BYTES - 1) as u64, "read past the limit");
    }

    #[test]
    fn a_reader_at_the_limit_is_read_whole() {
        let bytes = read_limited(std::io::repeat(b'a').take(MAX_DEFINITION_BYTES as u64)).expect("at the limit");
        assert_eq!(bytes.len(), MAX_DEFINITION_BYTES);
    }
}
