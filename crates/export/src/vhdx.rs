//! A dynamic VHDX (Hyper-V's disk format) written directly from a raw disk
//! image, so that the same raw bytes and seed always give the same file.
//!
//! `qemu-img convert -O vhdx` puts random GUIDs in the headers, the log and
//! the Virtual Disk ID, each under a CRC-32C, so its output differs on every
//! run. This writer follows Microsoft's Virtual Hard Disk v2 (VHDX) File
//! Format specification, [MS-VHDX] v1.0; section numbers below are the
//! spec's. Every GUID is derived from the caller's seed.
//!
//! The file is laid out as:
//!
//! | offset            | what                                  | spec      |
//! |-------------------|---------------------------------------|-----------|
//! | 0                 | file type identifier                  | §2.2.1    |
//! | 64 KiB, 128 KiB   | headers 1 and 2                       | §2.2.2    |
//! | 192 KiB, 256 KiB  | region tables 1 and 2 (identical)     | §2.2.3    |
//! | 1 MiB             | log, 1 MiB, empty (all zeros)         | §2.3      |
//! | 2 MiB             | metadata region, 1 MiB                | §2.6      |
//! | 3 MiB             | BAT, rounded up to whole MiB          | §2.5      |
//! | after the BAT     | payload blocks holding data, in order | §2.4      |
//!
//! Blocks of the raw image that are all zeros take no space: their BAT
//! entry is `PAYLOAD_BLOCK_ZERO`. The block size is the one `qemu-img create
//! -f vhdx` picks by default (8 MiB up to 1 GiB, 16 MiB up to 100 GiB).

use std::fs::{File, Permissions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crc::{CRC_32_ISCSI, Crc};
use sha2::{Digest, Sha256};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const TIB: u64 = 1024 * GIB;

/// CRC-32C (Castagnoli), the checksum of headers and region tables (§2.2.2).
const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

// §2.1 and §2.2: the header section.
const HEADER_SECTION_SIZE: u64 = MIB;
const HEADER1_OFFSET: u64 = 64 * KIB;
const HEADER2_OFFSET: u64 = 128 * KIB;
const REGION_TABLE1_OFFSET: u64 = 192 * KIB;
const REGION_TABLE2_OFFSET: u64 = 256 * KIB;

// §2.2.1: file type identifier.
const FILE_TYPE_SIGNATURE: &[u8; 8] = b"vhdxfile";
/// The Creator field: 256 UTF-16 code units, diagnostic only. No version
/// number in it, so upgrading nodeos does not change the bytes.
const CREATOR: &str = "nodeos";
const CREATOR_SIZE: usize = 512;

// §2.2.2: header.
const HEADER_SIGNATURE: &[u8; 4] = b"head";
const HEADER_SIZE: usize = 4 * KIB as usize;
/// Offset of the Checksum field in the header and in the region table header.
const CHECKSUM_OFFSET: usize = 4;
const HEADER_VERSION: u16 = 1;
const LOG_VERSION: u16 = 0;
/// An all-zero LogGuid says the log is empty: nothing to replay (§2.3).
const LOG_GUID_EMPTY: Guid = Guid::new(0, 0, 0, [0; 8]);
const LOG_OFFSET: u64 = HEADER_SECTION_SIZE;
const LOG_LENGTH: u64 = MIB;
/// Header 1 is written first; header 2, with the greater SequenceNumber, is
/// the current one. Both are valid and say the same.
const HEADER1_SEQUENCE_NUMBER: u64 = 1;
const HEADER2_SEQUENCE_NUMBER: u64 = 2;

// §2.2.3: region table.
const REGION_TABLE_SIGNATURE: &[u8; 4] = b"regi";
const REGION_TABLE_SIZE: usize = 64 * KIB as usize;
/// The Required bit of a region table entry (§2.2.3.2).
const REGION_REQUIRED: u32 = 1;
const BAT_REGION_GUID: Guid = Guid::new(
    0x2dc2_7766,
    0xf623,
    0x4200,
    [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08],
);
const METADATA_REGION_GUID: Guid = Guid::new(
    0x8b7c_a206,
    0x4790,
    0x4b9a,
    [0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e],
);

// §2.6: metadata region.
const METADATA_OFFSET: u64 = LOG_OFFSET + LOG_LENGTH;
const METADATA_LENGTH: u64 = MIB;
const METADATA_TABLE_SIGNATURE: &[u8; 8] = b"metadata";
const METADATA_TABLE_SIZE: usize = 64 * KIB as usize;
/// Items start right after the table; the spec wants at least 64 KiB (§2.6.1.2).
const METADATA_ITEMS_OFFSET: u32 = METADATA_TABLE_SIZE as u32;
// Metadata table entry flags (§2.6.1.2). IsUser stays 0: all items are system ones.
const IS_VIRTUAL_DISK: u32 = 1 << 1;
const IS_REQUIRED: u32 = 1 << 2;
const FILE_PARAMETERS_GUID: Guid = Guid::new(
    0xcaa1_6737,
    0xfa36,
    0x4d43,
    [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
);
const VIRTUAL_DISK_SIZE_GUID: Guid = Guid::new(
    0x2fa5_4224,
    0xcd1b,
    0x4876,
    [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
);
const VIRTUAL_DISK_ID_GUID: Guid = Guid::new(
    0xbeca_12ab,
    0xb2e6,
    0x4523,
    [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
);
const LOGICAL_SECTOR_SIZE_GUID: Guid = Guid::new(
    0x8141_bf1d,
    0xa96f,
    0x4709,
    [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
);
const PHYSICAL_SECTOR_SIZE_GUID: Guid = Guid::new(
    0xcda3_48c7,
    0x445d,
    0x4471,
    [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
);
/// The virtual disk's sector: the raw image must be a whole number of them.
const LOGICAL_SECTOR_SIZE: u32 = 512;
/// 4 KiB, as Hyper-V gives its own VHDX disks (a "512e" disk).
const PHYSICAL_SECTOR_SIZE: u32 = 4096;
/// VirtualDiskSize may be at most 64 TiB (§2.6.2.2).
const MAX_VIRTUAL_DISK_SIZE: u64 = 64 * TIB;

// §2.5: BAT.
const BAT_OFFSET: u64 = METADATA_OFFSET + METADATA_LENGTH;
/// A chunk covers 2^23 sectors; the chunk ratio is how many payload blocks
/// that is, and after each chunk's payload entries comes one sector bitmap
/// entry (§2.5).
const SECTORS_PER_CHUNK: u64 = 1 << 23;
/// §2.5.1.1: the block reads as zeros and takes no space in the file. (The
/// other "absent" state, PAYLOAD_BLOCK_NOT_PRESENT, leaves the contents
/// undefined for a dynamic disk, so readers may return anything.)
const PAYLOAD_BLOCK_ZERO: u64 = 2;
/// §2.5.1.1: the block's bytes are in the file at FileOffsetMB.
const PAYLOAD_BLOCK_FULLY_PRESENT: u64 = 6;
/// §2.5.1.2: the only valid state of a sector bitmap entry in a dynamic disk.
const SB_BLOCK_NOT_PRESENT: u64 = 0;

/// How much of a block is read at a time while looking for data: small
/// enough to stay in the CPU cache, which makes scanning zeros (and sparse
/// files) several times faster than reading whole blocks.
const SCAN_CHUNK: usize = 256 * KIB as usize;

#[derive(Debug, thiserror::Error)]
pub enum VhdxError {
    #[error("cannot read the raw disk image `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the raw disk image `{}` is {size} bytes, not a whole number of \
         {LOGICAL_SECTOR_SIZE}-byte sectors; pad it to a multiple of {LOGICAL_SECTOR_SIZE}",
        path.display()
    )]
    PartialSector { path: PathBuf, size: u64 },
    #[error("the raw disk image `{}` is empty; a VHDX disk needs at least one sector", path.display())]
    Empty { path: PathBuf },
    #[error(
        "the raw disk image `{}` is {size} bytes, more than the 64 TiB a VHDX disk can hold",
        path.display()
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error("cannot write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Writes `raw` (a raw disk image, size a multiple of 512) as a dynamic VHDX
/// to `out` and returns the size of the file written.
///
/// Blocks that are all zeros take no space. Every GUID in the file is
/// derived from `seed`, so the same raw bytes and seed give the same bytes;
/// pass something that identifies the content (such as the image's digest),
/// since the Virtual Disk ID is the disk's identity to the guest. The file
/// is written beside `out` and renamed into place at the end, so a failure
/// leaves nothing behind.
pub fn write_vhdx(raw: &Path, out: &Path, seed: &[u8]) -> Result<u64, VhdxError> {
    let read_error = |source| VhdxError::Read {
        path: raw.to_path_buf(),
        source,
    };
    let write_error = |source| VhdxError::Write {
        path: out.to_path_buf(),
        source,
    };

    let mut input = File::open(raw).map_err(read_error)?;
    // Seeking, unlike metadata(), also gives the size of a block device.
    let size = input.seek(SeekFrom::End(0)).map_err(read_error)?;
    input.rewind().map_err(read_error)?;
    check_size(raw, size)?;
    let geometry = Geometry::new(size, default_block_size(size));
    let guids = Guids::derive(seed);

    let dir = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".nodeos-vhdx-")
        // Like any new file: 0666 less the umask (tempfile's default is 0600).
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(write_error)?;
    let file = temp.as_file_mut();

    // The payload blocks go first, after the space the fixed part takes; the
    // BAT, which says where they went, is known only once they are written.
    file.seek(SeekFrom::Start(geometry.data_offset))
        .map_err(write_error)?;
    let mut bat = geometry.empty_bat();
    let mut end = geometry.data_offset;
    let mut block = vec![0; geometry.block_size as usize];
    for index in 0..geometry.payload_blocks {
        let start = index * u64::from(geometry.block_size);
        let len = (size - start).min(u64::from(geometry.block_size)) as usize;
        if !read_block(&mut input, &mut block, len).map_err(read_error)? {
            continue;
        }
        // A short last block is still written whole, so that every present
        // block has BlockSize bytes of file behind it.
        block[len..].fill(0);
        file.write_all(&block).map_err(write_error)?;
        bat[geometry.bat_index(index)] = payload_entry(end);
        end += u64::from(geometry.block_size);
    }

    file.rewind().map_err(write_error)?;
    file.write_all(&fixed_part(&geometry, &guids, &bat))
        .map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    temp.persist(out).map_err(|e| write_error(e.error))?;
    Ok(end)
}

/// The checks §2.6.2.2 puts on VirtualDiskSize, which is the raw size.
fn check_size(raw: &Path, size: u64) -> Result<(), VhdxError> {
    let path = raw.to_path_buf();
    if size == 0 {
        Err(VhdxError::Empty { path })
    } else if !size.is_multiple_of(u64::from(LOGICAL_SECTOR_SIZE)) {
        Err(VhdxError::PartialSector { path, size })
    } else if size > MAX_VIRTUAL_DISK_SIZE {
        Err(VhdxError::TooLarge { path, size })
    } else {
        Ok(())
    }
}

/// The block size `qemu-img create -f vhdx` picks when given none (qemu's
/// `vhdx_co_create`): larger disks get larger blocks to keep the BAT small.
fn default_block_size(virtual_disk_size: u64) -> u32 {
    let size = if virtual_disk_size > 32 * TIB {
        64 * MIB
    } else if virtual_disk_size > 100 * GIB {
        32 * MIB
    } else if virtual_disk_size > GIB {
        16 * MIB
    } else {
        8 * MIB
    };
    size as u32
}

/// Reads the next `len` bytes of `input` into `block` and says whether any of
/// them is not zero. While only zeros have been seen, each chunk is read to
/// the start of `block`, which stays in the cache; at the first chunk with
/// data, it is moved into place and the rest of the block read after it.
fn read_block(input: &mut File, block: &mut [u8], len: usize) -> io::Result<bool> {
    let mut scanned = 0;
    while scanned < len {
        let n = SCAN_CHUNK.min(len - scanned);
        input.read_exact(&mut block[..n])?;
        if !is_zero(&block[..n]) {
            block.copy_within(..n, scanned);
            block[..scanned].fill(0);
            input.read_exact(&mut block[scanned + n..len])?;
            return Ok(true);
        }
        scanned += n;
    }
    Ok(false)
}

fn is_zero(bytes: &[u8]) -> bool {
    // An OR over each 4 KiB vectorises; `all` alone would test byte by byte.
    bytes
        .chunks(4096)
        .all(|chunk| chunk.iter().fold(0, |acc, &b| acc | b) == 0)
}

/// Sizes and offsets that follow from the virtual disk size and block size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Geometry {
    virtual_disk_size: u64,
    block_size: u32,
    /// Payload blocks per chunk (§2.5).
    chunk_ratio: u64,
    payload_blocks: u64,
    /// Payload entries plus the sector bitmap entries between chunks (§2.5).
    bat_entries: u64,
    /// The BAT region's length: whole MiB, as regions must be (§2.2.3.2).
    bat_length: u64,
    /// Where the first payload block goes: right after the BAT.
    data_offset: u64,
}

impl Geometry {
    fn new(virtual_disk_size: u64, block_size: u32) -> Geometry {
        let block = u64::from(block_size);
        let chunk_ratio = SECTORS_PER_CHUNK * u64::from(LOGICAL_SECTOR_SIZE) / block;
        let payload_blocks = virtual_disk_size.div_ceil(block);
        // "For dynamic and fixed VHDX, the last BAT entry MUST locate the
        // last payload block": no sector bitmap entry after a partial chunk.
        let bat_entries = payload_blocks + (payload_blocks - 1) / chunk_ratio;
        let bat_length = (bat_entries * 8).next_multiple_of(MIB);
        Geometry {
            virtual_disk_size,
            block_size,
            chunk_ratio,
            payload_blocks,
            bat_entries,
            bat_length,
            data_offset: BAT_OFFSET + bat_length,
        }
    }

    /// Where payload block `block`'s entry is: after every `chunk_ratio`
    /// payload entries sits a sector bitmap entry (§2.5, figure 6).
    fn bat_index(&self, block: u64) -> usize {
        (block + block / self.chunk_ratio) as usize
    }

    /// A BAT with every payload block zero, and every sector bitmap block
    /// not present, as a dynamic disk's must be (§2.5.1.2).
    fn empty_bat(&self) -> Vec<u64> {
        let mut bat = vec![SB_BLOCK_NOT_PRESENT; self.bat_entries as usize];
        for block in 0..self.payload_blocks {
            bat[self.bat_index(block)] = PAYLOAD_BLOCK_ZERO;
        }
        bat
    }
}

/// §2.5.1: a BAT entry for a block stored at `offset`: State in bits 0-2,
/// FileOffsetMB in bits 20-63. `offset` is a whole number of MiB.
fn payload_entry(offset: u64) -> u64 {
    debug_assert_eq!(offset % MIB, 0);
    ((offset / MIB) << 20) | PAYLOAD_BLOCK_FULLY_PRESENT
}

/// Everything before the first payload block: the header section, the
/// empty log, the metadata region and the BAT.
fn fixed_part(geometry: &Geometry, guids: &Guids, bat: &[u64]) -> Vec<u8> {
    let mut out = vec![0; geometry.data_offset as usize];
    let mut put = |offset: u64, bytes: &[u8]| {
        out[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
    };
    put(0, &file_type_identifier());
    put(HEADER1_OFFSET, &header(HEADER1_SEQUENCE_NUMBER, guids));
    put(HEADER2_OFFSET, &header(HEADER2_SEQUENCE_NUMBER, guids));
    let regions = region_table(geometry);
    put(REGION_TABLE1_OFFSET, &regions);
    put(REGION_TABLE2_OFFSET, &regions);
    // The log (§2.3) stays zeros: with LogGuid zero nothing reads it.
    put(METADATA_OFFSET, &metadata_region(geometry, guids));
    put(BAT_OFFSET, &bat_region(bat));
    out
}

/// §2.2.1 File Type Identifier: the signature and the creator's name in
/// UTF-16LE.
fn file_type_identifier() -> Vec<u8> {
    let mut out = FILE_TYPE_SIGNATURE.to_vec();
    let creator: Vec<u8> = CREATOR.encode_utf16().flat_map(u16::to_le_bytes).collect();
    out.extend_from_slice(&creator);
    out.resize(FILE_TYPE_SIGNATURE.len() + CREATOR_SIZE, 0);
    out
}

/// §2.2.2 Header: 4 KiB with a CRC-32C over all of it.
fn header(sequence_number: u64, guids: &Guids) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE);
    out.extend_from_slice(HEADER_SIGNATURE);
    out.extend_from_slice(&0u32.to_le_bytes()); // Checksum, set below
    out.extend_from_slice(&sequence_number.to_le_bytes());
    out.extend_from_slice(&guids.file_write.to_bytes());
    out.extend_from_slice(&guids.data_write.to_bytes());
    out.extend_from_slice(&LOG_GUID_EMPTY.to_bytes());
    out.extend_from_slice(&LOG_VERSION.to_le_bytes());
    out.extend_from_slice(&HEADER_VERSION.to_le_bytes());
    out.extend_from_slice(&(LOG_LENGTH as u32).to_le_bytes());
    out.extend_from_slice(&LOG_OFFSET.to_le_bytes());
    out.resize(HEADER_SIZE, 0); // Reserved
    set_checksum(&mut out);
    out
}

/// §2.2.3 Region Table: the BAT and the metadata region, both required.
/// 64 KiB with a CRC-32C over all of it.
fn region_table(geometry: &Geometry) -> Vec<u8> {
    let regions = [
        (BAT_REGION_GUID, BAT_OFFSET, geometry.bat_length),
        (METADATA_REGION_GUID, METADATA_OFFSET, METADATA_LENGTH),
    ];
    let mut out = Vec::with_capacity(REGION_TABLE_SIZE);
    out.extend_from_slice(REGION_TABLE_SIGNATURE);
    out.extend_from_slice(&0u32.to_le_bytes()); // Checksum, set below
    out.extend_from_slice(&(regions.len() as u32).to_le_bytes()); // EntryCount
    out.extend_from_slice(&0u32.to_le_bytes()); // Reserved
    for (guid, file_offset, length) in regions {
        // §2.2.3.2 Region Table Entry.
        out.extend_from_slice(&guid.to_bytes());
        out.extend_from_slice(&file_offset.to_le_bytes());
        out.extend_from_slice(&(length as u32).to_le_bytes());
        out.extend_from_slice(&REGION_REQUIRED.to_le_bytes());
    }
    out.resize(REGION_TABLE_SIZE, 0);
    set_checksum(&mut out);
    out
}

/// §2.6 Metadata Region: the table (§2.6.1), then the five items every VHDX
/// has (§2.6.2), packed one after the other. No checksum here.
fn metadata_region(geometry: &Geometry, guids: &Guids) -> Vec<u8> {
    let items: [(Guid, u32, Vec<u8>); 5] = [
        (
            FILE_PARAMETERS_GUID,
            IS_REQUIRED,
            file_parameters(geometry.block_size),
        ),
        (
            VIRTUAL_DISK_SIZE_GUID,
            IS_REQUIRED | IS_VIRTUAL_DISK,
            geometry.virtual_disk_size.to_le_bytes().to_vec(),
        ),
        (
            VIRTUAL_DISK_ID_GUID,
            IS_REQUIRED | IS_VIRTUAL_DISK,
            guids.virtual_disk_id.to_bytes().to_vec(),
        ),
        (
            LOGICAL_SECTOR_SIZE_GUID,
            IS_REQUIRED | IS_VIRTUAL_DISK,
            LOGICAL_SECTOR_SIZE.to_le_bytes().to_vec(),
        ),
        (
            PHYSICAL_SECTOR_SIZE_GUID,
            IS_REQUIRED | IS_VIRTUAL_DISK,
            PHYSICAL_SECTOR_SIZE.to_le_bytes().to_vec(),
        ),
    ];

    // §2.6.1.1 Metadata Table Header.
    let mut table = Vec::with_capacity(METADATA_TABLE_SIZE);
    table.extend_from_slice(METADATA_TABLE_SIGNATURE);
    table.extend_from_slice(&0u16.to_le_bytes()); // Reserved
    table.extend_from_slice(&(items.len() as u16).to_le_bytes()); // EntryCount
    table.extend_from_slice(&[0; 20]); // Reserved2
    let mut data = Vec::new();
    for (item_id, flags, bytes) in &items {
        // §2.6.1.2 Metadata Table Entry.
        let offset = METADATA_ITEMS_OFFSET + data.len() as u32;
        table.extend_from_slice(&item_id.to_bytes());
        table.extend_from_slice(&offset.to_le_bytes());
        table.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        table.extend_from_slice(&flags.to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes()); // Reserved2
        data.extend_from_slice(bytes);
    }
    let mut region = table;
    region.resize(METADATA_TABLE_SIZE, 0);
    region.extend_from_slice(&data);
    region.resize(METADATA_LENGTH as usize, 0);
    region
}

/// §2.6.2.1 File Parameters: BlockSize, then LeaveBlockAllocated (bit 0)
/// and HasParent (bit 1), both 0: a dynamic disk with no parent.
fn file_parameters(block_size: u32) -> Vec<u8> {
    let mut out = block_size.to_le_bytes().to_vec();
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// §2.5 BAT: the entries, little-endian. The rest of the region is zeros.
fn bat_region(bat: &[u64]) -> Vec<u8> {
    bat.iter().flat_map(|entry| entry.to_le_bytes()).collect()
}

/// Puts the CRC-32C of `buf`, taken with the Checksum field zero, into that
/// field (§2.2.2, §2.2.3.1).
fn set_checksum(buf: &mut [u8]) {
    let field = CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4;
    buf[field.clone()].fill(0);
    let crc = CRC32C.checksum(buf);
    buf[field].copy_from_slice(&crc.to_le_bytes());
}

/// A GUID as the spec stores it ([MS-DTYP] §2.3.4): Data1, Data2 and
/// Data3 little-endian, Data4 as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Guid {
    data1: u32,
    data2: u16,
    data3: u16,
    data4: [u8; 8],
}

impl Guid {
    const fn new(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Guid {
        Guid {
            data1,
            data2,
            data3,
            data4,
        }
    }

    /// A version-4 (random) GUID whose "randomness" is
    /// sha256("nodeos vhdx guid\0" || purpose || "\0" || seed).
    fn derive(seed: &[u8], purpose: &str) -> Guid {
        let mut hasher = Sha256::new();
        hasher.update(b"nodeos vhdx guid\0");
        hasher.update(purpose.as_bytes());
        hasher.update(b"\0");
        hasher.update(seed);
        let h = hasher.finalize();
        let mut data4 = [0; 8];
        data4.copy_from_slice(&h[8..16]);
        data4[0] = (data4[0] & 0x3f) | 0x80; // variant 10xx (RFC 9562)
        Guid {
            data1: u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
            data2: u16::from_be_bytes([h[4], h[5]]),
            data3: (u16::from_be_bytes([h[6], h[7]]) & 0x0fff) | 0x4000, // version 4
            data4,
        }
    }

    fn to_bytes(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[0..4].copy_from_slice(&self.data1.to_le_bytes());
        out[4..6].copy_from_slice(&self.data2.to_le_bytes());
        out[6..8].copy_from_slice(&self.data3.to_le_bytes());
        out[8..16].copy_from_slice(&self.data4);
        out
    }
}

/// The GUIDs a new file carries, all from the seed.
struct Guids {
    /// Header FileWriteGuid (§2.2.2): changes when the file is next opened
    /// for writing.
    file_write: Guid,
    /// Header DataWriteGuid (§2.2.2): changes when the disk's data changes.
    data_write: Guid,
    /// VirtualDiskId (§2.6.2.3; "page 83 data" in qemu): the disk's
    /// identity to the guest, as its SCSI page 0x83 id.
    virtual_disk_id: Guid,
}

impl Guids {
    fn derive(seed: &[u8]) -> Guids {
        Guids {
            file_write: Guid::derive(seed, "FileWriteGuid"),
            data_write: Guid::derive(seed, "DataWriteGuid"),
            virtual_disk_id: Guid::derive(seed, "VirtualDiskId"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::fs::FileExt;
    use std::process::{Command, Output};

    use super::*;

    const SEED: &[u8] = b"sha256:0123456789abcdef";

    /// Runs qemu-img; the tests need it and fail, rather than skip, without it.
    fn qemu_img<S: AsRef<OsStr>>(args: &[S]) -> Output {
        Command::new("qemu-img")
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run qemu-img ({e}): install the Debian package qemu-utils")
            })
    }

    /// Runs qemu-img and fails the test, with its output, unless it exits 0.
    fn qemu_img_ok<S: AsRef<OsStr>>(args: &[S]) -> String {
        let output = qemu_img(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "qemu-img {:?} failed ({}):\n{stdout}{}",
            args.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
            output.status,
            String::from_utf8_lossy(&output.stderr),
        );
        stdout
    }

    /// A sparse raw image of `size` bytes with `data` written at each offset.
    fn raw_image(dir: &Path, size: u64, data: &[(u64, &[u8])]) -> PathBuf {
        let path = dir.join("disk.raw");
        let file = File::create(&path).unwrap();
        file.set_len(size).unwrap();
        for (offset, bytes) in data {
            file.write_all_at(bytes, *offset).unwrap();
        }
        path
    }

    /// Bytes that are not zero anywhere and differ from block to block.
    fn pattern(len: usize, salt: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ salt | 1).collect()
    }

    /// What every written VHDX must pass: `qemu-img check`, `info` saying
    /// vhdx and the raw's size, `compare` with the raw, and converting back
    /// to raw giving the raw's bytes.
    fn assert_valid_copy(raw: &Path, vhdx: &Path) {
        qemu_img_ok(&[
            OsStr::new("check"),
            OsStr::new("-f"),
            OsStr::new("vhdx"),
            vhdx.as_os_str(),
        ]);

        let info = qemu_img_ok(&[
            OsStr::new("info"),
            OsStr::new("--output=json"),
            OsStr::new("-f"),
            OsStr::new("vhdx"),
            vhdx.as_os_str(),
        ]);
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(info["format"], "vhdx");
        assert_eq!(info["virtual-size"], std::fs::metadata(raw).unwrap().len());

        let compare = qemu_img_ok(&[
            OsStr::new("compare"),
            OsStr::new("-f"),
            OsStr::new("raw"),
            OsStr::new("-F"),
            OsStr::new("vhdx"),
            raw.as_os_str(),
            vhdx.as_os_str(),
        ]);
        assert!(compare.contains("Images are identical"), "{compare}");

        let back = vhdx.with_extension("back.raw");
        qemu_img_ok(&[
            OsStr::new("convert"),
            OsStr::new("-f"),
            OsStr::new("vhdx"),
            OsStr::new("-O"),
            OsStr::new("raw"),
            vhdx.as_os_str(),
            back.as_os_str(),
        ]);
        assert!(
            std::fs::read(&back).unwrap() == std::fs::read(raw).unwrap(),
            "converting the VHDX back to raw did not give the raw's bytes"
        );
        std::fs::remove_file(back).unwrap();
    }

    #[test]
    fn crc32c_is_castagnoli() {
        // The check value of CRC-32C in the CRC catalogue.
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn guid_bytes_are_mixed_endian() {
        // The BAT region GUID as it appears in every VHDX file.
        assert_eq!(
            BAT_REGION_GUID.to_bytes(),
            [
                0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd,
                0x4a, 0x08
            ]
        );
        let derived = Guid::derive(SEED, "test");
        assert_eq!(derived.data3 >> 12, 4, "version 4");
        assert_eq!(derived.data4[0] >> 6, 0b10, "RFC variant");
    }

    fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
    }

    fn u64_at(bytes: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
    }

    /// Whether the CRC-32C in bytes 4..8 is that of `bytes` with it zeroed.
    fn checksum_is_valid(bytes: &[u8]) -> bool {
        let mut copy = bytes.to_vec();
        copy[4..8].fill(0);
        CRC32C.checksum(&copy) == u32_at(bytes, 4)
    }

    /// The parts qemu does not look at, or does not check: region table 2,
    /// both headers' fields, the metadata flags (§2.2, §2.6).
    #[test]
    fn header_section_and_metadata_follow_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(dir.path(), 24 * MIB, &[(0, &pattern(512, 9))]);
        let vhdx = dir.path().join("disk.vhdx");
        write_vhdx(&raw, &vhdx, SEED).unwrap();
        let file = std::fs::read(&vhdx).unwrap();

        assert_eq!(&file[..8], b"vhdxfile");
        assert_eq!(
            &file[8..20],
            "nodeos"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<_>>()
        );

        let h1 = &file[64 * 1024..68 * 1024];
        let h2 = &file[128 * 1024..132 * 1024];
        for h in [h1, h2] {
            assert_eq!(&h[..4], b"head");
            assert!(checksum_is_valid(h));
            assert_eq!(&h[48..64], &[0; 16], "LogGuid: empty log");
            assert_eq!(u16::from_le_bytes([h[64], h[65]]), 0, "LogVersion");
            assert_eq!(u16::from_le_bytes([h[66], h[67]]), 1, "Version");
            assert_eq!(u32_at(h, 68), MIB as u32, "LogLength");
            assert_eq!(u64_at(h, 72), MIB, "LogOffset");
            assert!(h[80..].iter().all(|&b| b == 0), "Reserved");
        }
        assert!(u64_at(h2, 8) > u64_at(h1, 8), "header 2 is current");
        assert_eq!(h1[16..64], h2[16..64], "same GUIDs in both headers");
        assert_ne!(h1[16..32], h1[32..48], "FileWriteGuid != DataWriteGuid");

        let rt1 = &file[192 * 1024..256 * 1024];
        let rt2 = &file[256 * 1024..320 * 1024];
        assert!(rt1 == rt2, "the two region tables differ");
        assert_eq!(&rt1[..4], b"regi");
        assert!(checksum_is_valid(rt1));
        assert_eq!(u32_at(rt1, 8), 2, "EntryCount");
        let mut regions = vec![(0, MIB), (MIB, 2 * MIB)]; // header section, log
        for entry in rt1[16..16 + 2 * 32].chunks(32) {
            let (offset, length) = (u64_at(entry, 16), u64::from(u32_at(entry, 24)));
            assert_eq!(u32_at(entry, 28), REGION_REQUIRED, "Required");
            assert!(offset % MIB == 0 && length % MIB == 0 && length > 0);
            regions.push((offset, offset + length));
        }
        regions.sort();
        assert!(regions.windows(2).all(|w| w[0].1 <= w[1].0), "{regions:?}");
        assert_eq!(rt1[16..32], BAT_REGION_GUID.to_bytes());
        assert_eq!(rt1[48..64], METADATA_REGION_GUID.to_bytes());

        let metadata = &file[u64_at(rt1, 48 + 16) as usize..][..MIB as usize];
        assert_eq!(&metadata[..8], b"metadata");
        assert_eq!(
            u16::from_le_bytes([metadata[10], metadata[11]]),
            5,
            "EntryCount"
        );
        let expected = [
            (
                FILE_PARAMETERS_GUID,
                0b100,
                // BlockSize 8 MiB; LeaveBlockAllocated and HasParent 0.
                vec![0, 0, 0x80, 0, 0, 0, 0, 0],
            ),
            (
                VIRTUAL_DISK_SIZE_GUID,
                0b110,
                (24 * MIB).to_le_bytes().to_vec(),
            ),
            (
                VIRTUAL_DISK_ID_GUID,
                0b110,
                Guid::derive(SEED, "VirtualDiskId").to_bytes().to_vec(),
            ),
            (
                LOGICAL_SECTOR_SIZE_GUID,
                0b110,
                512u32.to_le_bytes().to_vec(),
            ),
            (
                PHYSICAL_SECTOR_SIZE_GUID,
                0b110,
                4096u32.to_le_bytes().to_vec(),
            ),
        ];
        for (entry, (guid, flags, value)) in metadata[32..32 + 5 * 32].chunks(32).zip(expected) {
            assert_eq!(entry[..16], guid.to_bytes());
            let (offset, length) = (u32_at(entry, 16) as usize, u32_at(entry, 20) as usize);
            assert!(offset >= 64 * 1024, "items start after the table");
            assert_eq!(
                u32_at(entry, 24),
                flags,
                "IsUser, IsVirtualDisk, IsRequired"
            );
            assert_eq!(metadata[offset..offset + length], value[..]);
        }
    }

    #[test]
    fn scattered_blocks_with_partial_last_block() {
        let dir = tempfile::tempdir().unwrap();
        // Eight 8 MiB blocks and a 1 MiB + 512 byte ninth one.
        let size = 65 * MIB + 512;
        let first_sector = pattern(512, 1);
        let middle = pattern(MIB as usize, 2);
        let last_sector = pattern(512, 3);
        let raw = raw_image(
            dir.path(),
            size,
            &[
                (0, &first_sector),
                (27 * MIB + 4096, &middle),
                (size - 512, &last_sector),
            ],
        );
        let vhdx = dir.path().join("disk.vhdx");

        let written = write_vhdx(&raw, &vhdx, SEED).unwrap();

        // Blocks 0, 3 and 8 hold data; the other six take no space.
        let geometry = Geometry::new(size, 8 * MIB as u32);
        assert_eq!(written, geometry.data_offset + 3 * 8 * MIB);
        assert_eq!(std::fs::metadata(&vhdx).unwrap().len(), written);
        assert_valid_copy(&raw, &vhdx);
    }

    #[test]
    fn all_zero_raw_is_just_the_fixed_part() {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(dir.path(), 64 * MIB, &[]);
        let vhdx = dir.path().join("disk.vhdx");

        let written = write_vhdx(&raw, &vhdx, SEED).unwrap();

        assert_eq!(written, 4 * MIB, "header section, log, metadata, BAT");
        assert_valid_copy(&raw, &vhdx);
    }

    #[test]
    fn size_not_a_multiple_of_the_block_size() {
        let dir = tempfile::tempdir().unwrap();
        let size = 40 * MIB + 512;
        let raw = raw_image(dir.path(), size, &[(size - 512, &pattern(512, 4))]);
        let vhdx = dir.path().join("disk.vhdx");

        write_vhdx(&raw, &vhdx, SEED).unwrap();

        assert_valid_copy(&raw, &vhdx);
    }

    #[test]
    fn bat_interleaves_sector_bitmap_entries_past_4_gib() {
        // 16 MiB blocks, so a chunk is 256 blocks (4 GiB) and entry 256 of
        // the BAT is a sector bitmap entry. Data on both sides of it.
        let dir = tempfile::tempdir().unwrap();
        let size = 4 * GIB + 16 * MIB + 512;
        let raw = raw_image(
            dir.path(),
            size,
            &[
                (4 * GIB - 512, &pattern(512, 5)),
                (4 * GIB, &pattern(512, 6)),
                (size - 512, &pattern(512, 7)),
            ],
        );
        let vhdx = dir.path().join("disk.vhdx");

        let written = write_vhdx(&raw, &vhdx, SEED).unwrap();

        let geometry = Geometry::new(size, default_block_size(size));
        assert_eq!(geometry.chunk_ratio, 256);
        assert_eq!(geometry.bat_entries, 258 + 1);
        assert_eq!(written, geometry.data_offset + 3 * 16 * MIB);
        let file = File::open(&vhdx).unwrap();
        let mut entries = [0; 4 * 8];
        file.read_exact_at(&mut entries, BAT_OFFSET + 255 * 8)
            .unwrap();
        let entry = |i: usize| u64::from_le_bytes(entries[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(entry(0) & 7, PAYLOAD_BLOCK_FULLY_PRESENT, "block 255");
        assert_eq!(entry(1), SB_BLOCK_NOT_PRESENT, "sector bitmap 0");
        assert_eq!(entry(2) & 7, PAYLOAD_BLOCK_FULLY_PRESENT, "block 256");
        assert_eq!(entry(3) & 7, PAYLOAD_BLOCK_FULLY_PRESENT, "block 257");
        // Comparing reads the whole 4 GiB; converting back is left to the
        // smaller tests.
        qemu_img_ok(&[
            OsStr::new("check"),
            OsStr::new("-f"),
            OsStr::new("vhdx"),
            vhdx.as_os_str(),
        ]);
        let compare = qemu_img_ok(&[
            OsStr::new("compare"),
            OsStr::new("-f"),
            OsStr::new("raw"),
            OsStr::new("-F"),
            OsStr::new("vhdx"),
            raw.as_os_str(),
            vhdx.as_os_str(),
        ]);
        assert!(compare.contains("Images are identical"), "{compare}");
    }

    #[test]
    fn same_input_and_seed_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(dir.path(), 20 * MIB, &[(MIB, &pattern(4096, 8))]);
        let a = dir.path().join("a.vhdx");
        let b = dir.path().join("b.vhdx");
        let c = dir.path().join("c.vhdx");

        write_vhdx(&raw, &a, SEED).unwrap();
        write_vhdx(&raw, &b, SEED).unwrap();
        write_vhdx(&raw, &c, b"another seed").unwrap();

        let a = std::fs::read(a).unwrap();
        assert!(a == std::fs::read(b).unwrap(), "same seed, different bytes");
        let c_bytes = std::fs::read(&c).unwrap();
        assert_eq!(a.len(), c_bytes.len());
        assert!(a != c_bytes, "different seeds, same bytes");
        assert_valid_copy(&raw, &c);
    }

    #[test]
    fn partial_sector_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(dir.path(), 10 * MIB + 100, &[]);
        let vhdx = dir.path().join("disk.vhdx");

        let err = write_vhdx(&raw, &vhdx, SEED).unwrap_err();

        assert!(
            matches!(err, VhdxError::PartialSector { size, .. } if size == 10 * MIB + 100),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("disk.raw") && message.contains("512"),
            "{message}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["disk.raw"]);
    }

    #[test]
    fn empty_raw_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(dir.path(), 0, &[]);

        let err = write_vhdx(&raw, &dir.path().join("disk.vhdx"), SEED).unwrap_err();

        assert!(matches!(err, VhdxError::Empty { .. }), "{err:?}");
    }

    #[test]
    fn missing_raw_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("missing.raw");

        let err = write_vhdx(&raw, &dir.path().join("disk.vhdx"), SEED).unwrap_err();

        assert!(matches!(err, VhdxError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.raw"), "{err}");
    }

    #[test]
    fn read_block_finds_data_anywhere_and_keeps_it_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * SCAN_CHUNK + 512;
        for at in [0, SCAN_CHUNK - 1, SCAN_CHUNK, 2 * SCAN_CHUNK + 7, len - 1] {
            let mut bytes = vec![0; len];
            bytes[at] = 0xa5;
            let path = dir.path().join("block");
            std::fs::write(&path, &bytes).unwrap();
            let mut block = vec![0xff; len + 100];

            let has_data = read_block(&mut File::open(&path).unwrap(), &mut block, len).unwrap();

            assert!(has_data, "data at {at}");
            assert!(block[..len] == bytes[..], "data at {at} moved");
        }
        let path = dir.path().join("zeros");
        std::fs::write(&path, vec![0; len]).unwrap();
        let mut block = vec![0; len];
        assert!(!read_block(&mut File::open(&path).unwrap(), &mut block, len).unwrap());
    }
}
