//! Reading files that a person or another program handed us, without trusting them.
//!
//! Every file gpt2-bench and gpt2-export read (weight files, checkpoints, tokenizer files, golden
//! files, baselines) goes through [`open_regular`] or [`read_limited`], so three hazards are
//! handled once, here, rather than at each call site:
//!
//! - **Special files.** Opening a FIFO for reading blocks until a writer appears, and a device
//!   such as `/dev/urandom` never ends. The file is opened with `O_NONBLOCK` (which does not
//!   block on a FIFO and changes nothing for a regular file) and refused unless `fstat` on the
//!   opened descriptor says it is a regular file. Checking the descriptor, not the path, means a
//!   path swapped between the check and the open cannot slip through.
//! - **Unbounded reads.** Files that are parsed in memory (JSON, merges, logits) are read with a
//!   stated limit, checked against the file's size before reading and enforced while reading.
//! - **Text from files reaching the terminal.** [`printable`] escapes control characters and
//!   shortens a string before it goes into a message, so a file cannot print escape sequences,
//!   NUL bytes or a thousand lines into someone's terminal.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Largest JSON or text file read whole: `config.json`, `tokenizer.json` (GPT-2's is 1.4 MB),
/// `vocab.json`, `merges.txt`, a shard index, a golden file, a saved report.
pub const MAX_TEXT_FILE_BYTES: u64 = 64 << 20;

/// What a path is, for messages about inputs and outputs: "a directory", "a FIFO (named
/// pipe)", "a symbolic link" (from `symlink_metadata`), ...
pub fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    if ft.is_symlink() {
        return "a symbolic link";
    }
    "not a regular file"
}

/// An `InvalidInput` error saying what the path is instead of a regular file.
fn not_regular(meta: &std::fs::Metadata) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("is {}, not a regular file", kind_of(meta)),
    )
}

/// Opens `path` for reading if, after following symlinks, it is a regular file; a FIFO, device,
/// socket or directory is an `InvalidInput` error saying which, and never blocks.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting.
        options.custom_flags(libc::O_NONBLOCK);
    }
    #[cfg(not(unix))]
    {
        // Without O_NONBLOCK, check the path first (a small race, on platforms without FIFOs
        // that block on open).
        let meta = std::fs::metadata(path)?;
        if !meta.is_file() {
            return Err(not_regular(&meta));
        }
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    Ok(file)
}

/// Reads a whole regular file of at most `limit` bytes (checked against its size first, and
/// enforced while reading in case it grows).
pub fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    let too_big = |size: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "is {size} bytes, more than the {} bytes this file may have",
                limit
            ),
        )
    };
    if len > limit {
        return Err(too_big(len.to_string()));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_big(format!("over {limit}")));
    }
    Ok(bytes)
}

/// [`read_limited`] for UTF-8 text.
pub fn read_text_limited(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_limited(path, limit)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "is not UTF-8 text"))
}

/// Longest string from a file that a message shows; longer ones are cut with `…`.
pub const MAX_SHOWN_CHARS: usize = 80;

/// XXH3-64 of a whole regular file, read in 1 MiB pieces ([`crate::format::checksum`] of its
/// bytes, without holding them all): how a copy that must stay identical (the GGUF that the
/// llama.cpp backend writes once and reuses) is checked before every use.
pub fn checksum_file(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = open_regular(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hasher.digest()),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// A string from a file, made safe to print: control characters (newlines, escapes, NUL, ...)
/// written as Rust escapes (`\n`, `\u{1b}`), and at most [`MAX_SHOWN_CHARS`] characters kept.
pub fn printable(s: &str) -> String {
    printable_up_to(s, MAX_SHOWN_CHARS)
}

/// [`printable`] with another length limit, in characters (an error line, say).
pub fn printable_up_to(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_checksum_is_the_checksum_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Longer than one read, and not a whole number of them.
        let bytes: Vec<u8> = (0..(3 << 20) + 7).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            checksum_file(&path).unwrap(),
            crate::format::checksum(&bytes)
        );
        std::fs::write(&path, b"").unwrap();
        assert_eq!(checksum_file(&path).unwrap(), crate::format::checksum(b""));
        assert!(checksum_file(dir.path()).is_err(), "a directory is refused");
    }

    #[test]
    fn printable_escapes_and_shortens() {
        assert_eq!(printable("wte.weight"), "wte.weight");
        assert_eq!(printable("a\n\x1b[2Jb\0"), "a\\n\\u{1b}[2Jb\\0");
        assert_eq!(printable("héllo"), "héllo");
        let long = "x".repeat(500);
        let shown = printable(&long);
        assert_eq!(shown.chars().count(), MAX_SHOWN_CHARS + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn regular_files_open_and_read_within_limits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        std::fs::write(&p, b"{\"a\": 1}").unwrap();
        assert_eq!(read_limited(&p, 100).unwrap(), b"{\"a\": 1}");
        assert_eq!(read_text_limited(&p, 8).unwrap(), "{\"a\": 1}");
        let e = read_limited(&p, 7).unwrap_err();
        assert!(e.to_string().contains("more than the 7 bytes"), "{e}");
        let e = open_regular(dir.path()).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        std::fs::write(&p, b"\xff").unwrap();
        assert!(read_text_limited(&p, 8).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_refused_without_blocking() {
        let e = open_regular(Path::new("/dev/null")).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        // Would block forever without O_NONBLOCK: no writer ever opens it.
        let e = open_regular(&fifo).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert!(
            open_regular(&link)
                .unwrap_err()
                .to_string()
                .contains("FIFO")
        );
    }
}
