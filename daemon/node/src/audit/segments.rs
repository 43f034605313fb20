//! The node's audit log on disk: segment files of JSON lines under one
//! directory, named by the seq of their first record.
//!
//! ```text
//!  <audit dir>/node-<id>/00000000000000000001.jsonl   checkpoint, records …
//!                       /00000000000000052311.jsonl   checkpoint (anchors the previous head), records …
//!  <audit dir>/signing.key                            the node's Ed25519 checkpoint key (hex, 0600)
//! ```
//!
//! Only the writer thread appends; readers open the files read-only and
//! stop at the last complete line. A line is complete when its newline is
//! written; a torn tail (a crash inside a batch, never acknowledged) is cut
//! off when the writer opens the log.

pub use keel_audit::complete_lines;
use keel_audit::{Chain, RECORD_BYTES_MAX};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Segment file suffix.
const SUFFIX: &str = "jsonl";

/// The directory of node `node`'s own log under `dir`.
pub fn node_dir(dir: &Path, node: u64) -> PathBuf {
    dir.join(format!("node-{node}"))
}

/// A segment's file name for its first seq.
fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{SUFFIX}")
}

/// The segments in `dir`, oldest first: (first seq, path).
pub fn list(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(segments),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let path = entry?.path();
        let Some(stem) = path.file_stem().and_then(|stem| stem.to_str()) else {
            continue;
        };
        if path.extension().and_then(|ext| ext.to_str()) != Some(SUFFIX) {
            continue;
        }
        if let Ok(first_seq) = stem.parse::<u64>() {
            segments.push((first_seq, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Calls `each` with every complete line of the segment at `path` (without
/// its newline) until it returns `false`; answers the bytes read. A line
/// longer than `RECORD_BYTES_MAX` is passed cut at the bound (it cannot
/// decode); a torn last line is not passed.
pub fn for_each_line(path: &Path, mut each: impl FnMut(&[u8]) -> bool) -> std::io::Result<u64> {
    for_each_line_from(path, 0, |line, _| each(line))
}

/// [`for_each_line`] from byte `offset` (the start of a line), passing each
/// line with the offset just after it.
pub fn for_each_line_from(path: &Path, offset: u64, mut each: impl FnMut(&[u8], u64) -> bool) -> std::io::Result<u64> {
    use std::io::BufRead;
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = std::io::BufReader::with_capacity(256 * 1024, file);
    let mut line = Vec::new();
    let mut read = 0u64;
    loop {
        line.clear();
        let n = (&mut reader).take(RECORD_BYTES_MAX as u64 + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(read);
        }
        read = read.saturating_add(n as u64);
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if n > RECORD_BYTES_MAX {
            // Over-long: skip to the end of it.
            let mut rest = Vec::new();
            let skipped = reader.read_until(b'\n', &mut rest)?;
            read = read.saturating_add(skipped as u64);
            if rest.last() != Some(&b'\n') {
                return Ok(read);
            }
        } else {
            return Ok(read);
        }
        if !line.is_empty() && !each(&line, offset.saturating_add(read)) {
            return Ok(read);
        }
    }
}

/// The seq of a line, read from its first field (`{"seq":N,…`) without
/// decoding the rest; `None` when the line does not start so.
pub fn seq_of(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The open segment the writer appends to.
#[derive(Debug)]
pub struct Segment {
    file: File,
    /// Bytes known durable (fsynced) at the end of the last batch.
    durable_len: u64,
}

impl Segment {
    /// Opens the log in `dir` for appending: the chain continues after the
    /// last complete line of the last segment (a torn tail is cut off); an
    /// empty log starts a chain for `node`. Returns the segment (or none:
    /// the caller starts one) and the chain.
    pub fn open(dir: &Path, node: u64) -> std::io::Result<(Option<Segment>, Chain)> {
        std::fs::create_dir_all(dir)?;
        let segments = list(dir)?;
        let Some((_, last)) = segments.last() else {
            return Ok((None, Chain::new(node)));
        };
        let bytes = std::fs::read(last)?;
        let (lines, complete) = complete_lines(&bytes);
        let chain = match lines.last() {
            Some(line) => Chain::after(line).map_err(|problem| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the last audit record in {} does not decode: {problem}", last.display()),
                )
            })?,
            None => {
                // A segment with no complete line: created, then the process
                // died before its checkpoint was durable. Continue from the one before.
                std::fs::remove_file(last)?;
                sync_dir(dir)?;
                return Segment::open(dir, node);
            }
        };
        if chain.node() != node {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} holds node {}'s audit log, not node {node}'s", dir.display(), chain.node()),
            ));
        }
        let file = OpenOptions::new().read(true).write(true).open(last)?;
        let complete = complete as u64;
        if file.metadata()?.len() != complete {
            file.set_len(complete)?;
            file.sync_data()?;
        }
        let mut segment = Segment { file, durable_len: complete };
        segment.file.seek(SeekFrom::Start(complete))?;
        Ok((Some(segment), chain))
    }

    /// A new, empty segment whose first record will be `first_seq`.
    pub fn create(dir: &Path, first_seq: u64) -> std::io::Result<Segment> {
        let path = dir.join(segment_name(first_seq));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        sync_dir(dir)?;
        Ok(Segment { file, durable_len: 0 })
    }

    /// Appends `bytes` and makes them durable (one `fdatasync`). On any
    /// error the segment is cut back to what was durable before.
    pub fn append_durably(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let written = self.file.write_all(bytes).and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.durable_len = self.durable_len.saturating_add(bytes.len() as u64);
                Ok(())
            }
            Err(error) => {
                // Best effort: the next batch retries the same cut first.
                let _ = self.rewind();
                Err(error)
            }
        }
    }

    /// Cuts the file back to its durable length.
    pub fn rewind(&mut self) -> std::io::Result<()> {
        self.file.set_len(self.durable_len)?;
        self.file.seek(SeekFrom::Start(self.durable_len))?;
        Ok(())
    }

    /// Whether the file is longer than its durable length (a failed
    /// append's bytes that could not be cut yet).
    pub fn is_dirty(&self) -> std::io::Result<bool> {
        Ok(self.file.metadata()?.len() != self.durable_len)
    }

    /// Bytes durable in this segment.
    pub fn len(&self) -> u64 {
        self.durable_len
    }
}

/// Makes a directory entry change durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The node's checkpoint signing key at `path`, created on first use.
pub fn signing_key(path: &Path) -> std::io::Result<ed25519_dalek::SigningKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a hex Ed25519 secret key", path.display()),
                )
            })?;
            Ok(ed25519_dalek::SigningKey::from_bytes(&bytes))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let partial = path.with_extension("tmp");
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&partial)?;
            file.write_all(hex::encode(key.to_bytes()).as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&partial, path)?;
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
            Ok(key)
        }
        Err(error) => Err(error),
    }
}
