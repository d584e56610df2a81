//! Checksummed records on raw disk areas: the update state copies, a
//! slot's metadata and the last trial's log tail.
//!
//! A frame is `MAGIC (16 bytes) | u32 LE length | payload | sha256` where
//! the sha256 covers everything before it. A torn or stale write fails the
//! check and reads as [`FrameError`], never as a shorter payload.

use sha2::{Digest, Sha256};

/// Bytes a frame adds around its payload.
pub const OVERHEAD: usize = 16 + 4 + 32;

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The area does not start with the expected magic (never written).
    NoMagic,
    /// The length field says more than the area or the limit holds.
    Length(usize),
    /// The checksum does not match (a torn or corrupted write).
    Checksum,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::NoMagic => write!(f, "no record"),
            FrameError::Length(n) => write!(f, "record length {n} is out of range"),
            FrameError::Checksum => write!(f, "record checksum does not match"),
        }
    }
}

impl std::error::Error for FrameError {}

/// `payload` framed with `magic`.
pub fn encode(magic: &[u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + OVERHEAD);
    out.extend_from_slice(magic);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// The payload of the frame at the start of `area` (which may be longer),
/// if it carries `magic`, is at most `max` bytes and its checksum holds.
pub fn decode<'a>(magic: &[u8; 16], area: &'a [u8], max: usize) -> Result<&'a [u8], FrameError> {
    if !area.starts_with(magic) || area.len() < 20 {
        return Err(FrameError::NoMagic);
    }
    let len = u32::from_le_bytes(area[16..20].try_into().expect("4 bytes")) as usize;
    if len > max || 20 + len + 32 > area.len() {
        return Err(FrameError::Length(len));
    }
    let (body, rest) = area.split_at(20 + len);
    if Sha256::digest(body).as_slice() != &rest[..32] {
        return Err(FrameError::Checksum);
    }
    Ok(&body[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8; 16] = b"NODEOS-TEST\0\0\0\0\0";

    #[test]
    fn round_trips_inside_a_longer_area() {
        let mut area = encode(MAGIC, b"hello");
        area.resize(4096, 0);
        assert_eq!(decode(MAGIC, &area, 100), Ok(&b"hello"[..]));
    }

    #[test]
    fn a_flipped_byte_a_short_area_or_another_magic_is_refused() {
        let frame = encode(MAGIC, b"hello");
        let mut torn = frame.clone();
        torn[22] ^= 1;
        assert_eq!(decode(MAGIC, &torn, 100), Err(FrameError::Checksum));
        assert_eq!(
            decode(MAGIC, &frame[..frame.len() - 1], 100),
            Err(FrameError::Length(5))
        );
        assert_eq!(decode(MAGIC, &frame, 4), Err(FrameError::Length(5)));
        assert_eq!(
            decode(b"NODEOS-OTHER\0\0\0\0", &frame, 100),
            Err(FrameError::NoMagic)
        );
        assert_eq!(decode(MAGIC, &[0; 4096], 100), Err(FrameError::NoMagic));
    }
}
