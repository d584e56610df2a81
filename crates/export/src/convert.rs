//! qcow2 and vmdk, converted from the raw disk by `qemu-img`.
//!
//! qcow2 comes out of `qemu-img convert` the same for the same input. A
//! vmdk does not: its descriptor carries a random content ID (`CID=`) and
//! names the extent after the output file. Both are made fixed here: the
//! conversion writes under the output's final file name, and the CID is
//! replaced by one derived from the export's seed (the descriptor has no
//! checksum).

use std::path::Path;

use crate::tools::{self, Tool};
use crate::{ExportError, io_error};

/// Converts `raw` to qcow2 at `out`.
pub fn qcow2(raw: &Path, out: &Path) -> Result<(), ExportError> {
    let mut command = Tool::QemuImg.command();
    command
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(out);
    tools::run("qemu-img", command)
}

/// Converts `raw` to a streamOptimized vmdk (the subformat vSphere and the
/// clouds import) at `out`, named in its descriptor after `final_path`'s
/// file name, with a content ID from `seed`.
pub fn vmdk(raw: &Path, out: &Path, final_path: &Path, seed: &[u8]) -> Result<(), ExportError> {
    let dir = tempfile::tempdir_in(out.parent().unwrap_or(Path::new(".")))
        .map_err(io_error("cannot create a temporary directory"))?;
    let named = dir
        .path()
        .join(final_path.file_name().unwrap_or("disk.vmdk".as_ref()));
    let mut command = Tool::QemuImg.command();
    command
        .args([
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
        ])
        .arg(raw)
        .arg(&named);
    tools::run("qemu-img", command)?;
    fix_cid(&named, seed)?;
    std::fs::rename(&named, out).map_err(io_error(format!("cannot move `{}`", named.display())))
}

/// Where the descriptor is: streamOptimized puts it in the first sectors,
/// after the 512-byte header.
const DESCRIPTOR_SEARCH: u64 = 64 * 1024;

/// Replaces the 8 hex digits after `CID=` in the vmdk's embedded
/// descriptor with the first 4 bytes of `seed`.
fn fix_cid(path: &Path, seed: &[u8]) -> Result<(), ExportError> {
    use std::os::unix::fs::FileExt;
    let what = || format!("cannot fix the content ID of `{}`", path.display());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_error(what()))?;
    let mut head = vec![0; DESCRIPTOR_SEARCH as usize];
    let n = file.read_at(&mut head, 0).map_err(io_error(what()))?;
    head.truncate(n);
    let at = find_cid(&head).ok_or_else(|| ExportError::Io {
        what: what(),
        source: std::io::Error::other("qemu-img wrote no `CID=` in the descriptor"),
    })?;
    let cid: String = seed[..4].iter().map(|b| format!("{b:02x}")).collect();
    file.write_all_at(cid.as_bytes(), at as u64)
        .map_err(io_error(what()))
}

/// The offset of the 8 hex digits of the line `CID=xxxxxxxx`.
fn find_cid(head: &[u8]) -> Option<usize> {
    let start = head.windows(5).position(|w| w == b"\nCID=")? + 5;
    let digits = head.get(start..start + 8)?;
    (digits.iter().all(u8::is_ascii_hexdigit) && head.get(start + 8) == Some(&b'\n'))
        .then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cid_line_is_found_and_not_the_parent_cid() {
        let text = b"# Disk DescriptorFile\nversion=1\nCID=e57a527c\nparentCID=ffffffff\n";
        let at = find_cid(text).unwrap();
        assert_eq!(&text[at..at + 8], b"e57a527c");
        assert_eq!(find_cid(b"\nparentCID=ffffffff\n"), None);
        assert_eq!(find_cid(b"\nCID=zz\n"), None);
    }
}
