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

/// Replaces the value of `CID=` in the vmdk's embedded descriptor with the
/// first 4 bytes of `seed`, as 8 hex digits (qemu-img writes it without
/// leading zeros, so the text after it may move by a few bytes within the
/// descriptor's area).
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
    let cid: String = seed[..4].iter().map(|b| format!("{b:02x}")).collect();
    let (at, patched) = patch_cid(&head, &cid).ok_or_else(|| ExportError::Io {
        what: what(),
        source: std::io::Error::other("its descriptor has no `CID=` line qemu-img would write"),
    })?;
    file.write_all_at(&patched, at as u64)
        .map_err(io_error(what()))
}

/// The bytes from the `CID=` value on, with the value replaced by `cid`:
/// (their offset, the new bytes). The descriptor's area is the header's
/// `descriptorOffset` and `descriptorSize` (sectors, at bytes 28 and 36),
/// and the new text must leave it a terminating zero.
fn patch_cid(head: &[u8], cid: &str) -> Option<(usize, Vec<u8>)> {
    let u64_at = |at: usize| Some(u64::from_le_bytes(head.get(at..at + 8)?.try_into().ok()?));
    if head.get(..4)? != b"KDMV" {
        return None;
    }
    let area_end = usize::try_from((u64_at(28)? + u64_at(36)?) * 512).ok()?;
    let start = head.windows(5).position(|w| w == b"\nCID=")? + 5;
    let end = start + head[start..].iter().position(|&b| b == b'\n')?;
    let value = &head[start..end];
    if value.is_empty() || value.len() > 8 || !value.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let text_end = start + head[start..].iter().position(|&b| b == 0)?;
    let mut patched = cid.as_bytes().to_vec();
    patched.extend_from_slice(&head[end..text_end]);
    let new_end = start + patched.len();
    if new_end >= area_end.min(head.len()) {
        return None;
    }
    // Zeros over what the old text left beyond the new end.
    patched.resize(patched.len().max(text_end - start), 0);
    Some((start, patched))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A streamOptimized header (descriptor at sector 1, 20 sectors) and
    /// `descriptor` after it.
    fn vmdk_head(descriptor: &str) -> Vec<u8> {
        let mut head = vec![0u8; 512 * 21];
        head[..4].copy_from_slice(b"KDMV");
        head[28..36].copy_from_slice(&1u64.to_le_bytes());
        head[36..44].copy_from_slice(&20u64.to_le_bytes());
        head[512..512 + descriptor.len()].copy_from_slice(descriptor.as_bytes());
        head
    }

    fn apply(head: &[u8], (at, bytes): (usize, Vec<u8>)) -> String {
        let mut out = head.to_vec();
        out[at..at + bytes.len()].copy_from_slice(&bytes);
        let text = &out[512..];
        String::from_utf8(text[..text.iter().position(|&b| b == 0).unwrap()].to_vec()).unwrap()
    }

    #[test]
    fn the_cid_becomes_eight_digits_and_the_parent_cid_stays() {
        let full = "# Disk DescriptorFile\nversion=1\nCID=e57a527c\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n";
        let head = vmdk_head(full);
        let patched = apply(&head, patch_cid(&head, "0011aabb").unwrap());
        assert_eq!(patched, full.replace("e57a527c", "0011aabb"));

        // qemu-img drops leading zeros: the text moves, nothing is lost.
        let short = "# Disk DescriptorFile\nversion=1\nCID=7a527c\nparentCID=ffffffff\n";
        let head = vmdk_head(short);
        let patched = apply(&head, patch_cid(&head, "0011aabb").unwrap());
        assert_eq!(patched, short.replace("7a527c", "0011aabb"));

        assert_eq!(
            patch_cid(&vmdk_head("\nparentCID=ffffffff\n"), "00000000"),
            None
        );
        assert_eq!(patch_cid(&vmdk_head("\nCID=zz\n"), "00000000"), None);
    }
}
