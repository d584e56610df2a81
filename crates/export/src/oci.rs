//! A KubeVirt containerDisk as an OCI image-layout archive, written without
//! docker or a registry.
//!
//! The image has one layer holding `/disk/<name>` owned by 107:107 (the
//! qemu user of virt-launcher), as `ADD --chown=107:107 disk.qcow2 /disk/`
//! on `FROM scratch` would make. The archive is a tar of an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/…`), the form that
//! `skopeo copy oci-archive:PATH:TAG docker://REF` pushes. Every byte of it
//! depends only on the disk's bytes, its name and the tag: times are 0,
//! owners numeric, entries sorted and the gzip level fixed.

use std::fs::{File, Permissions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The qemu user and group in KubeVirt's virt-launcher.
const QEMU_ID: u64 = 107;
/// Longest disk name whose `disk/<name>` fits a tar header's name field.
const MAX_DISK_NAME: usize = 100 - "disk/".len() - 1;
/// Longest image tag a registry takes.
const MAX_TAG: usize = 128;
/// The time stamp in the config and its history: the epoch, so it never varies.
const EPOCH: &str = "1970-01-01T00:00:00Z";
/// The layer's gzip level, part of the format: changing it (or flate2's
/// backend) changes every digest. Level 1 is about three times faster than
/// 6 and only a few percent larger, as a disk of squashfs layers is mostly
/// compressed already.
const GZIP_LEVEL: u32 = 1;

const BLOCK: u64 = 512;

const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciImage {
    /// `sha256:<hex>` of the image manifest, as a registry will report it.
    pub manifest_digest: String,
    /// Size of the archive in bytes.
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("cannot read the disk `{}`", path.display())]
    Disk {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "`{name}` cannot name the disk in a containerDisk: use a file name of 1 to {MAX_DISK_NAME} ASCII letters, digits, `.`, `_` or `-`"
    )]
    DiskName { name: String },
    #[error(
        "`{tag}` is not an image tag: use 1 to {MAX_TAG} letters, digits, `_`, `.` or `-`, not starting with `.` or `-`"
    )]
    Tag { tag: String },
}

/// Writes to `out` an OCI image-layout archive of a KubeVirt containerDisk
/// holding the file `disk` as `/disk/<disk_name>`, tagged `tag`.
///
/// The disk is streamed, never held in memory; the compressed layer goes to
/// an unnamed temporary file beside `out`. The archive is written to a
/// temporary file there too and renamed to `out` (replacing a file there)
/// only when complete, so a failure leaves nothing behind. Same inputs, same
/// bytes.
pub fn write_container_disk(
    disk: &Path,
    disk_name: &str,
    tag: &str,
    out: &Path,
) -> Result<OciImage, OciError> {
    check_disk_name(disk_name)?;
    check_tag(tag)?;
    let write_error = |source| OciError::Write {
        path: out.to_path_buf(),
        source,
    };
    let dir = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };

    let layer = write_layer(disk, disk_name, dir, out)?;
    let diff_id = format!("sha256:{}", layer.diff_id);
    let config = serde_json::to_vec(&Config {
        architecture: "amd64",
        os: "linux",
        created: EPOCH,
        rootfs: RootFs {
            kind: "layers",
            diff_ids: [&diff_id],
        },
        history: [History {
            created: EPOCH,
            created_by: "nodeos export",
        }],
    })
    .expect("the config serialises");
    let config_hex = sha256_hex(&config);
    let config_digest = format!("sha256:{config_hex}");
    let layer_digest = format!("sha256:{}", layer.hex);
    let manifest = serde_json::to_vec(&Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE,
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE,
            digest: &config_digest,
            size: config.len() as u64,
            annotations: None,
        },
        layers: [Descriptor {
            media_type: LAYER_MEDIA_TYPE,
            digest: &layer_digest,
            size: layer.size,
            annotations: None,
        }],
    })
    .expect("the manifest serialises");
    let manifest_hex = sha256_hex(&manifest);
    let manifest_digest = format!("sha256:{manifest_hex}");
    let index = serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: INDEX_MEDIA_TYPE,
        manifests: [Descriptor {
            media_type: MANIFEST_MEDIA_TYPE,
            digest: &manifest_digest,
            size: manifest.len() as u64,
            annotations: Some(Annotations { ref_name: tag }),
        }],
    })
    .expect("the index serialises");

    let mut entries = vec![
        ("blobs/".to_owned(), Content::Dir),
        ("blobs/sha256/".to_owned(), Content::Dir),
        (
            format!("blobs/sha256/{config_hex}"),
            Content::Bytes(&config),
        ),
        (
            format!("blobs/sha256/{manifest_hex}"),
            Content::Bytes(&manifest),
        ),
        (format!("blobs/sha256/{}", layer.hex), Content::Layer),
        ("index.json".to_owned(), Content::Bytes(&index)),
        (
            "oci-layout".to_owned(),
            Content::Bytes(&br#"{"imageLayoutVersion":"1.0.0"}"#[..]),
        ),
    ];
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let temp = tempfile::Builder::new()
        .prefix(".nodeos-oci-")
        .suffix(".tmp")
        .permissions(Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(write_error)?;
    let mut archive = BufWriter::new(temp);
    let mut layer_file = layer.file;
    for (name, content) in &entries {
        let written = match content {
            Content::Dir => archive.write_all(header(name, Entry::Dir, 0o755, 0).as_bytes()),
            Content::Bytes(bytes) => write_file_entry(&mut archive, name, bytes),
            Content::Layer => {
                let header = header(name, Entry::File(layer.size), 0o644, 0);
                archive
                    .write_all(header.as_bytes())
                    .and_then(|()| layer_file.seek(SeekFrom::Start(0)).map(drop))
                    .and_then(|()| {
                        copy_exact(&mut layer_file, &mut archive, layer.size)
                            .map_err(CopyError::into_inner)
                    })
                    .and_then(|()| pad(&mut archive, layer.size))
            }
        };
        written.map_err(write_error)?;
    }
    archive
        .write_all(&[0; 2 * BLOCK as usize])
        .map_err(write_error)?;
    let temp = archive
        .into_inner()
        .map_err(|e| write_error(e.into_error()))?;
    let size = temp.as_file().metadata().map_err(write_error)?.len();
    temp.persist(out).map_err(|e| write_error(e.error))?;
    Ok(OciImage {
        manifest_digest,
        size,
    })
}

/// The gzipped layer in an unnamed temporary file, with its digests.
struct Layer {
    file: File,
    /// Hex sha256 of the gzip bytes: the blob's name.
    hex: String,
    /// Size of the gzip bytes.
    size: u64,
    /// Hex sha256 of the uncompressed tar.
    diff_id: String,
}

/// Writes the layer tar (`disk/` and `disk/<disk_name>`, owned by qemu)
/// through gzip into a temporary file in `dir`, hashing both streams.
fn write_layer(disk: &Path, disk_name: &str, dir: &Path, out: &Path) -> Result<Layer, OciError> {
    let write_error = |source| OciError::Write {
        path: out.to_path_buf(),
        source,
    };
    let disk_error = |source| OciError::Disk {
        path: disk.to_path_buf(),
        source,
    };
    let mut source = File::open(disk).map_err(disk_error)?;
    let len = source.metadata().map_err(disk_error)?.len();

    let file = tempfile::tempfile_in(dir).map_err(write_error)?;
    let gzip = GzBuilder::new().mtime(0).operating_system(255).write(
        Hashing::new(BufWriter::new(file)),
        Compression::new(GZIP_LEVEL),
    );
    let mut layer_tar: Hashing<GzEncoder<Hashing<BufWriter<File>>>> = Hashing::new(gzip);

    layer_tar
        .write_all(header("disk/", Entry::Dir, 0o555, QEMU_ID).as_bytes())
        .map_err(write_error)?;
    let path = format!("disk/{disk_name}");
    layer_tar
        .write_all(header(&path, Entry::File(len), 0o440, QEMU_ID).as_bytes())
        .map_err(write_error)?;
    copy_exact(&mut source, &mut layer_tar, len).map_err(|e| match e {
        CopyError::Read(source) => disk_error(source),
        CopyError::Write(source) => write_error(source),
    })?;
    pad(&mut layer_tar, len).map_err(write_error)?;
    layer_tar
        .write_all(&[0; 2 * BLOCK as usize])
        .map_err(write_error)?;

    let (diff_id, _, gzip) = layer_tar.finish();
    let (hex, size, file) = gzip.finish().map_err(write_error)?.finish();
    let file = file.into_inner().map_err(|e| write_error(e.into_error()))?;
    Ok(Layer {
        file,
        hex,
        size,
        diff_id,
    })
}

fn check_disk_name(name: &str) -> Result<(), OciError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_DISK_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(OciError::DiskName {
            name: name.to_owned(),
        })
    }
}

/// A tag as registries take it: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), OciError> {
    let ok = tag.len() <= MAX_TAG
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(OciError::Tag {
            tag: tag.to_owned(),
        })
    }
}

enum Entry {
    Dir,
    File(u64),
}

enum Content<'a> {
    Dir,
    Bytes(&'a [u8]),
    Layer,
}

/// A GNU tar header with time 0 and numeric owner `owner:owner`. `name` is
/// checked ASCII shorter than 100 bytes, so it is stored as is (a directory
/// keeps its trailing `/`, as GNU tar writes it).
fn header(name: &str, entry: Entry, mode: u32, owner: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    let field = &mut header.as_old_mut().name;
    assert!(name.len() < field.len(), "tar name `{name}` is too long");
    field[..name.len()].copy_from_slice(name.as_bytes());
    match entry {
        Entry::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
        }
        Entry::File(size) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(size);
        }
    }
    header.set_mode(mode);
    header.set_uid(owner);
    header.set_gid(owner);
    header.set_mtime(0);
    header.set_cksum();
    header
}

fn write_file_entry(out: &mut impl Write, name: &str, bytes: &[u8]) -> io::Result<()> {
    let len = bytes.len() as u64;
    out.write_all(header(name, Entry::File(len), 0o644, 0).as_bytes())?;
    out.write_all(bytes)?;
    pad(out, len)
}

/// Zeros up to the next 512-byte block after `len` bytes of data.
fn pad(out: &mut impl Write, len: u64) -> io::Result<()> {
    let rest = (BLOCK - len % BLOCK) % BLOCK;
    out.write_all(&[0; BLOCK as usize][..rest as usize])
}

/// Which side of a copy failed.
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl CopyError {
    fn into_inner(self) -> io::Error {
        match self {
            CopyError::Read(e) | CopyError::Write(e) => e,
        }
    }
}

/// Copies exactly `len` bytes; a source that ends sooner is a read error.
fn copy_exact(from: &mut impl Read, to: &mut impl Write, len: u64) -> Result<(), CopyError> {
    let mut buf = vec![0; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match from.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(CopyError::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "it ended {left} bytes short of its {len}; did it change while it was read?"
                    ),
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
        left -= n as u64;
    }
    Ok(())
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            sha: Sha256::new(),
            len: 0,
        }
    }

    /// Hex sha256 and length of what was written, and the inner writer.
    fn finish(self) -> (String, u64, W) {
        (hex(&self.sha.finalize()), self.len, self.inner)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

// The JSON documents, as structs so that key order is the field order
// whatever serde_json's features are.

#[derive(Serialize)]
struct Config<'a> {
    architecture: &'a str,
    os: &'a str,
    created: &'a str,
    rootfs: RootFs<'a>,
    history: [History<'a>; 1],
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: [&'a str; 1],
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
    created_by: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: [Descriptor<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: [Descriptor<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<Annotations<'a>>,
}

#[derive(Serialize)]
struct Annotations<'a> {
    #[serde(rename = "org.opencontainers.image.ref.name")]
    ref_name: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const TAG: &str = "1.0.0";

    /// A sparse test disk: a hole, pseudo-random runs and a length that is
    /// not a multiple of 512, so padding is exercised.
    fn make_disk(dir: &Path) -> PathBuf {
        let path = dir.join("disk.qcow2");
        let mut file = File::create(&path).unwrap();
        file.set_len(8 * 1024 * 1024 + 123).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for offset in [0, 3 * 1024 * 1024, 8 * 1024 * 1024 - 1000] {
            let bytes: Vec<u8> = (0..100_000)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            file.seek(SeekFrom::Start(offset)).unwrap();
            file.write_all(&bytes).unwrap();
        }
        path
    }

    /// The entries of a tar: (path, header, data).
    fn entries(bytes: &[u8]) -> Vec<(String, tar::Header, Vec<u8>)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
                let header = entry.header().clone();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                (path, header, data)
            })
            .collect()
    }

    fn blob<'a>(entries: &'a [(String, tar::Header, Vec<u8>)], digest: &str) -> &'a [u8] {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let name = format!("blobs/sha256/{hex}");
        let (_, _, data) = entries.iter().find(|(path, _, _)| *path == name).unwrap();
        assert_eq!(sha256_hex(data), hex, "blob {name} does not match its name");
        data
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// Runs a tool that the tests need, failing (not skipping) without it.
    fn run(tool: &str, package: &str, args: &[&str]) -> std::process::Output {
        let output = Command::new(tool).args(args).output().unwrap_or_else(|e| {
            panic!("cannot run {tool} ({e}): install the Debian package {package} (apt-get install {package})")
        });
        assert!(
            output.status.success(),
            "{tool} {args:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Returns the archive's bytes and what was reported.
    fn write(dir: &Path, disk: &Path, out_name: &str) -> (Vec<u8>, OciImage) {
        let out = dir.join(out_name);
        let image = write_container_disk(disk, "disk.qcow2", TAG, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(image.size, bytes.len() as u64);
        (bytes, image)
    }

    #[test]
    fn same_input_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let disk = make_disk(dir.path());
        let (first, first_image) = write(dir.path(), &disk, "a.oci.tar");
        let (second, second_image) = write(dir.path(), &disk, "b.oci.tar");
        assert_eq!(first_image, second_image);
        assert!(first == second, "two exports of one disk differ");
        // Only the two archives and the disk: no temporary file is left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn outer_tar_lists_the_layout_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let disk = make_disk(dir.path());
        let (bytes, _) = write(dir.path(), &disk, "hello.oci.tar");
        let entries = entries(&bytes);
        let names: Vec<&str> = entries.iter().map(|(p, _, _)| p.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 7, "{names:?}");
        assert_eq!(&names[..2], ["blobs/", "blobs/sha256/"]);
        assert!(
            names[2..5]
                .iter()
                .all(|n| n.starts_with("blobs/sha256/") && n.len() == 77)
        );
        assert_eq!(&names[5..], ["index.json", "oci-layout"]);
        for (path, header, _) in &entries {
            let dir = path.ends_with('/');
            assert_eq!(header.entry_type().is_dir(), dir, "{path}");
            assert_eq!(
                header.mode().unwrap(),
                if dir { 0o755 } else { 0o644 },
                "{path}"
            );
            assert_eq!(header.uid().unwrap(), 0, "{path}");
            assert_eq!(header.gid().unwrap(), 0, "{path}");
            assert_eq!(header.mtime().unwrap(), 0, "{path}");
            assert_eq!(header.username_bytes(), Some(&b""[..]), "{path}");
        }
        let layout = &entries
            .iter()
            .find(|(p, _, _)| p == "oci-layout")
            .unwrap()
            .2;
        assert_eq!(layout, br#"{"imageLayoutVersion":"1.0.0"}"#);
    }

    #[test]
    fn digests_in_index_and_manifest_match_the_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let disk = make_disk(dir.path());
        let (bytes, image) = write(dir.path(), &disk, "hello.oci.tar");
        let entries = entries(&bytes);
        let index = json(
            &entries
                .iter()
                .find(|(p, _, _)| p == "index.json")
                .unwrap()
                .2,
        );
        assert_eq!(index["schemaVersion"], 2);
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1);
        let descriptor = &manifests[0];
        assert_eq!(descriptor["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(
            descriptor["annotations"]["org.opencontainers.image.ref.name"],
            TAG
        );
        assert_eq!(descriptor["digest"], image.manifest_digest.as_str());
        let manifest_bytes = blob(&entries, &image.manifest_digest);
        assert_eq!(descriptor["size"], manifest_bytes.len());

        let manifest = json(manifest_bytes);
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        let config_bytes = blob(&entries, manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(manifest["config"]["size"], config_bytes.len());
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], LAYER_MEDIA_TYPE);
        let layer = blob(&entries, layers[0]["digest"].as_str().unwrap());
        assert_eq!(layers[0]["size"], layer.len());

        let diff_id = format!("sha256:{}", sha256_hex(&gunzip(layer)));
        let expected = format!(
            r#"{{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"history":[{{"created":"1970-01-01T00:00:00Z","created_by":"nodeos export"}}]}}"#
        );
        assert_eq!(std::str::from_utf8(config_bytes).unwrap(), expected);
    }

    #[test]
    fn layer_holds_the_disk_owned_by_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let disk = make_disk(dir.path());
        let (bytes, _) = write(dir.path(), &disk, "hello.oci.tar");
        let entries = entries(&bytes);
        let (_, _, layer) = entries
            .iter()
            .find(|(p, h, _)| p.starts_with("blobs/sha256/") && h.size().unwrap() > 100_000)
            .unwrap();
        // gzip header: no time stamp, no file name.
        assert_eq!(&layer[..4], [0x1f, 0x8b, 8, 0]);
        assert_eq!(&layer[4..8], [0; 4]);
        let layer_entries = self::entries(&gunzip(layer));
        let summary: Vec<(&str, u32, u64, u64, u64, bool)> = layer_entries
            .iter()
            .map(|(p, h, _)| {
                let (uid, gid) = (h.uid().unwrap(), h.gid().unwrap());
                (
                    p.as_str(),
                    h.mode().unwrap(),
                    uid,
                    gid,
                    h.mtime().unwrap(),
                    h.entry_type().is_dir(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("disk/", 0o555, 107, 107, 0, true),
                ("disk/disk.qcow2", 0o440, 107, 107, 0, false),
            ]
        );
        assert!(
            layer_entries[1].2 == std::fs::read(&disk).unwrap(),
            "the layer's disk differs"
        );
    }

    #[test]
    fn a_missing_disk_names_it_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("absent.qcow2");
        let out = dir.path().join("hello.oci.tar");
        let err = write_container_disk(&disk, "disk.qcow2", TAG, &out).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read the disk `{}`", disk.display())
        );
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_unwritable_output_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let disk = make_disk(dir.path());
        let out = dir.path().join("missing-dir").join("hello.oci.tar");
        let err = write_container_disk(&disk, "disk.qcow2", TAG, &out).unwrap_err();
        assert_eq!(err.to_string(), format!("cannot write `{}`", out.display()));
    }

    #[test]
    fn bad_tags_and_disk_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let disk = make_disk(dir.path());
        let out = dir.path().join("hello.oci.tar");
        for tag in ["", ".hidden", "-x", "a:b", "a/b", &"x".repeat(129)] {
            let err = write_container_disk(&disk, "disk.qcow2", tag, &out).unwrap_err();
            assert!(matches!(err, OciError::Tag { .. }), "{tag:?}: {err}");
        }
        for name in ["", ".", "..", "a/b", "disk image", &"x".repeat(95)] {
            let err = write_container_disk(&disk, name, TAG, &out).unwrap_err();
            assert!(matches!(err, OciError::DiskName { .. }), "{name:?}: {err}");
        }
        for tag in ["latest", "_x", "1.0.0-rc.1", &"x".repeat(128)] {
            check_tag(tag).unwrap();
        }
        check_disk_name(&"x".repeat(94)).unwrap();
        assert!(!out.exists());
    }

    #[test]
    fn skopeo_inspects_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let disk = make_disk(dir.path());
        let out = dir.path().join("hello.oci.tar");
        let image = write_container_disk(&disk, "disk.qcow2", TAG, &out).unwrap();
        let reference = format!("oci-archive:{}:{TAG}", out.display());
        let output = run("skopeo", "skopeo", &["inspect", &reference]);
        let inspected = json(&output.stdout);
        assert_eq!(inspected["Architecture"], "amd64", "{inspected}");
        assert_eq!(inspected["Os"], "linux", "{inspected}");
        assert_eq!(
            inspected["Layers"].as_array().unwrap().len(),
            1,
            "{inspected}"
        );
        assert_eq!(
            inspected["Digest"],
            image.manifest_digest.as_str(),
            "{inspected}"
        );
    }

    #[test]
    fn umoci_unpacks_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let disk = make_disk(dir.path());
        let (bytes, _) = write(dir.path(), &disk, "hello.oci.tar");
        let layout = dir.path().join("layout");
        tar::Archive::new(&bytes[..]).unpack(&layout).unwrap();
        let image = format!("{}:{TAG}", layout.display());
        let stat = run("umoci", "umoci", &["stat", "--image", &image]);
        let stat = String::from_utf8_lossy(&stat.stdout);
        assert!(stat.contains("nodeos export"), "{stat}");
        let bundle = dir.path().join("bundle");
        let bundle_arg = bundle.to_str().unwrap();
        run(
            "umoci",
            "umoci",
            &["raw", "unpack", "--rootless", "--image", &image, bundle_arg],
        );
        let unpacked = bundle.join("disk/disk.qcow2");
        let same = std::fs::read(&unpacked).unwrap() == std::fs::read(&disk).unwrap();
        // The unpacked `disk/` is read-only: open it up so the temporary
        // directory can be removed.
        std::fs::set_permissions(bundle.join("disk"), Permissions::from_mode(0o755)).unwrap();
        assert!(same, "umoci unpacked a different disk");
    }
}
