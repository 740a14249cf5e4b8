//! Appends to a file with `O_DIRECT`, bypassing the page cache.
//!
//! Measured on this project's machine: writing 4 GB through the page cache costs
//! about 10 s of kernel CPU (as much as decoding and encoding the export together);
//! the same bytes written with `O_DIRECT` in 8 MB aligned blocks cost 0.4 s. Exports
//! are written once and rarely read back at once, so the cache buys nothing.
//!
//! `O_DIRECT` needs block-aligned buffers, sizes and offsets: data is gathered into an
//! aligned buffer, the last block is zero-padded, and the file is truncated to its
//! real length at the end. Where the file system refuses `O_DIRECT` (tmpfs, some
//! overlays) [`DirectWriter::open`] returns `None` and the caller writes normally.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Alignment that satisfies every common logical block size.
const BLOCK: usize = 4096;
/// Bytes per write.
const BUFFER_BLOCKS: usize = 2048;

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

/// A file being written with `O_DIRECT`.
pub struct DirectWriter {
    file: File,
    blocks: Vec<Block>,
    filled: usize,
    written: u64,
}

impl DirectWriter {
    /// Creates `path` for direct writing, or `None` when the file system does not
    /// support it.
    pub fn open(path: &Path) -> io::Result<Option<DirectWriter>> {
        let opened = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        match opened {
            Ok(file) => Ok(Some(DirectWriter {
                file,
                blocks: vec![Block([0; BLOCK]); BUFFER_BLOCKS],
                filled: 0,
                written: 0,
            })),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn buffer(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.blocks)
    }

    /// Writes the first `len` bytes of the buffer (a multiple of the block size).
    fn write_buffer(&mut self, len: usize) -> io::Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(&self.blocks);
        self.file.write_all(&bytes[..len])?;
        self.written += len as u64;
        Ok(())
    }

    /// Pads the last block, writes it and trims the file to the bytes given.
    pub fn finish(mut self) -> io::Result<File> {
        let tail = self.filled;
        if tail > 0 {
            let padded = tail.div_ceil(BLOCK) * BLOCK;
            self.buffer()[tail..padded].fill(0);
            self.write_buffer(padded)?;
            self.written -= (padded - tail) as u64;
            self.file.set_len(self.written)?;
        }
        Ok(self.file)
    }
}

impl Write for DirectWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let capacity = BLOCK * BUFFER_BLOCKS;
        let n = data.len().min(capacity - self.filled);
        let start = self.filled;
        self.buffer()[start..start + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled == capacity {
            self.write_buffer(capacity)?;
            self.filled = 0;
        }
        Ok(n)
    }

    /// Only whole blocks can be written before the end; the tail waits for `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_exact_bytes_of_any_length() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0usize,
            1,
            4095,
            4096,
            4097,
            BLOCK * BUFFER_BLOCKS + 123,
            3 * BLOCK * BUFFER_BLOCKS,
        ] {
            let path = dir.path().join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            match DirectWriter::open(&path).unwrap() {
                Some(mut w) => {
                    for chunk in data.chunks(1000 + len % 777) {
                        w.write_all(chunk).unwrap();
                    }
                    w.finish().unwrap();
                }
                None => std::fs::write(&path, &data).unwrap(),
            }
            assert_eq!(std::fs::read(&path).unwrap(), data, "length {len}");
        }
    }
}
