//! The dm-verity hash tree of a read-only layer, computed here rather than
//! by `veritysetup` (the tests check both agree) and appended to the layer
//! file: the filesystem padded to whole blocks, then the tree with its top
//! level first, as the kernel's verity target reads it when data and tree
//! share a device. The format is fixed by [`nodeos_manifest::verity`].

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use nodeos_manifest::verity::{BLOCK_SIZE, Verity};
use sha2::{Digest, Sha256};

use crate::hex;

const BLOCK: usize = BLOCK_SIZE as usize;
const DIGEST: usize = 32;

/// Pads the filesystem image at `path` to whole blocks, appends its hash
/// tree and returns what the manifest records of it. The salt is derived
/// from the content, so the same filesystem gives the same bytes.
pub fn append_hash_tree(path: &Path) -> io::Result<Verity> {
    let mut file = File::options().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "an empty layer has nothing to verify",
        ));
    }
    let data_blocks = len.div_ceil(BLOCK_SIZE);
    file.set_len(data_blocks * BLOCK_SIZE)?;

    let salt = salt(&mut file, data_blocks)?;
    let (levels, root) = tree(&mut file, data_blocks, &salt)?;
    file.seek(SeekFrom::Start(data_blocks * BLOCK_SIZE))?;
    let mut out = BufWriter::new(&mut file);
    for level in levels.iter().rev() {
        out.write_all(level)?;
    }
    out.flush()?;
    drop(out);
    file.sync_all()?;
    Ok(Verity {
        root_hash: hex(&root),
        salt: hex(&salt),
        data_blocks,
    })
}

/// sha256 over a label and the whole data area.
fn salt(file: &mut File, data_blocks: u64) -> io::Result<[u8; DIGEST]> {
    let mut hasher = Sha256::new();
    hasher.update(b"nodeos dm-verity salt v1\n");
    for_each_block(file, data_blocks, |block| hasher.update(block))?;
    Ok(hasher.finalize().into())
}

/// Every level of the tree, the data's own digests first, each padded to
/// whole blocks; and the root hash. With one data block there is no level
/// and the root is that block's digest, as the kernel computes it.
fn tree(
    file: &mut File,
    data_blocks: u64,
    salt: &[u8; DIGEST],
) -> io::Result<(Vec<Vec<u8>>, [u8; DIGEST])> {
    let mut digests = Vec::with_capacity(data_blocks as usize * DIGEST);
    for_each_block(file, data_blocks, |block| {
        digests.extend_from_slice(&digest(salt, block))
    })?;
    let mut levels = Vec::new();
    while digests.len() > DIGEST {
        let mut level = digests;
        level.resize(level.len().div_ceil(BLOCK) * BLOCK, 0);
        digests = level
            .chunks(BLOCK)
            .flat_map(|block| digest(salt, block))
            .collect();
        levels.push(level);
    }
    let root = digests.try_into().expect("one digest");
    Ok((levels, root))
}

/// Version 1 of the format: the salt, then the block.
fn digest(salt: &[u8; DIGEST], block: &[u8]) -> [u8; DIGEST] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(block);
    hasher.finalize().into()
}

fn for_each_block(file: &mut File, blocks: u64, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::with_capacity(16 * BLOCK, file);
    let mut block = vec![0; BLOCK];
    for _ in 0..blocks {
        reader.read_exact(&mut block)?;
        f(&block);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const VERITYSETUP: &str = "/usr/sbin/veritysetup";
    /// Digests per hash block: level i of the tree has
    /// ceil(data_blocks / FAN_OUT^(i+1)) blocks.
    const FAN_OUT: usize = BLOCK / DIGEST;

    /// Pseudo-random but fixed bytes.
    fn bytes(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// `veritysetup format` of the data part of `path` with the same salt,
    /// the tree after the data in the same file: its root hash.
    fn veritysetup(path: &Path, verity: &Verity) -> String {
        let data = verity.data_blocks * BLOCK_SIZE;
        let out = Command::new(VERITYSETUP)
            .args(["format", "--no-superblock", "--format=1", "--hash=sha256"])
            .args(["--data-block-size=4096", "--hash-block-size=4096"])
            .arg(format!("--data-blocks={}", verity.data_blocks))
            .arg(format!("--hash-offset={data}"))
            .arg(format!("--salt={}", verity.salt))
            .arg(path)
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("{VERITYSETUP}: {e}: run scripts/setup (cryptsetup-bin)"));
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("Root hash:"))
            .expect("a root hash")
            .trim()
            .to_owned()
    }

    /// Our tree and veritysetup's, byte for byte, for sizes that give no
    /// level, one, two and three levels and a partial last block.
    #[test]
    fn the_tree_is_veritysetups_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        for (len, levels) in [
            (1, 0),
            (4096, 0),
            (4097, 1),
            (128 * 4096, 1),
            (128 * 4096 + 1, 2),
            (128 * 128 * 4096 + 10, 3),
        ] {
            let ours = dir.path().join(format!("ours-{len}"));
            std::fs::write(&ours, bytes(len, len as u32)).unwrap();
            let verity = append_hash_tree(&ours).unwrap();
            assert!(verity.is_well_formed(), "{verity:?}");
            assert_eq!(verity.data_blocks, (len as u64).div_ceil(BLOCK_SIZE));

            let theirs = dir.path().join(format!("theirs-{len}"));
            let mut data = bytes(len, len as u32);
            data.resize(verity.data_blocks as usize * BLOCK, 0);
            std::fs::write(&theirs, &data).unwrap();
            assert_eq!(
                veritysetup(&theirs, &verity),
                verity.root_hash,
                "{len} bytes"
            );
            let (ours, theirs) = (
                std::fs::read(&ours).unwrap(),
                std::fs::read(&theirs).unwrap(),
            );
            assert_eq!(ours.len(), theirs.len(), "{len} bytes");
            assert!(ours == theirs, "{len} bytes: the trees differ");
            let tree_blocks = (ours.len() - data.len()) / BLOCK;
            let expected: usize = (1..=levels)
                .map(|i| (verity.data_blocks as usize).div_ceil(FAN_OUT.pow(i)))
                .sum();
            assert_eq!(tree_blocks, expected, "{len} bytes: {levels} levels");
        }
    }

    #[test]
    fn the_same_content_gives_the_same_tree_and_one_byte_changes_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let data = bytes(3 * 4096 + 100, 7);
        let mut roots = Vec::new();
        for (name, flip) in [("a", None), ("b", None), ("c", Some(5000))] {
            let path = dir.path().join(name);
            let mut data = data.clone();
            if let Some(at) = flip {
                data[at] ^= 1;
            }
            std::fs::write(&path, &data).unwrap();
            roots.push((
                append_hash_tree(&path).unwrap(),
                std::fs::read(&path).unwrap(),
            ));
        }
        assert_eq!(roots[0], roots[1]);
        assert_ne!(roots[0].0.root_hash, roots[2].0.root_hash);
        assert_ne!(roots[0].0.salt, roots[2].0.salt);
    }

    #[test]
    fn an_empty_layer_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = append_hash_tree(file.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
