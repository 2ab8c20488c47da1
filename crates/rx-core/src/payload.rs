//! The `RX.DUMP` payload: every library's source, with a version and a checksum, so that
//! `RX.RESTORE` can refuse anything truncated, corrupted or foreign before touching the
//! registry. Pure.
//!
//! Layout (integers little-endian):
//! `"RXDUMP"` | version: u16 | count: u32 | count x (len: u32, code: len bytes) | sha1 of
//! everything before it: 20 bytes.

use sha1::{Digest, Sha1};

const MAGIC: &[u8; 6] = b"RXDUMP";
pub const PAYLOAD_VERSION: u16 = 1;
const DIGEST_LEN: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// Not an RX payload at all.
    Foreign,
    /// Written by a newer RX than this one.
    NewerVersion(u16),
    /// Truncated, or its checksum does not match.
    Corrupt,
}

impl PayloadError {
    /// The message after the `ERR ` code: the one `FUNCTION RESTORE` gives for any payload
    /// it cannot take, whatever the reason.
    pub fn message(&self) -> String {
        "DUMP payload version or checksum are wrong".into()
    }
}

pub fn encode<'a>(codes: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let codes: Vec<&[u8]> = codes.into_iter().collect();
    let mut out = Vec::with_capacity(32 + codes.iter().map(|c| c.len() + 4).sum::<usize>());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&PAYLOAD_VERSION.to_le_bytes());
    out.extend_from_slice(&(codes.len() as u32).to_le_bytes());
    for code in codes {
        out.extend_from_slice(&(code.len() as u32).to_le_bytes());
        out.extend_from_slice(code);
    }
    let digest = Sha1::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// The library sources in a payload, after checking all of it.
pub fn decode(payload: &[u8]) -> Result<Vec<&[u8]>, PayloadError> {
    if payload.len() < MAGIC.len() || &payload[..MAGIC.len()] != MAGIC {
        return Err(PayloadError::Foreign);
    }
    if payload.len() < MAGIC.len() + 2 + 4 + DIGEST_LEN {
        return Err(PayloadError::Corrupt);
    }
    let version = u16::from_le_bytes([payload[6], payload[7]]);
    if version > PAYLOAD_VERSION {
        return Err(PayloadError::NewerVersion(version));
    }
    let (body, digest) = payload.split_at(payload.len() - DIGEST_LEN);
    if Sha1::digest(body).as_slice() != digest {
        return Err(PayloadError::Corrupt);
    }
    let mut pos = 8;
    let read_u32 = |pos: &mut usize| -> Result<usize, PayloadError> {
        let b = body.get(*pos..*pos + 4).ok_or(PayloadError::Corrupt)?;
        *pos += 4;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = read_u32(&mut pos)?;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let len = read_u32(&mut pos)?;
        let code = body
            .get(pos..pos.checked_add(len).ok_or(PayloadError::Corrupt)?)
            .ok_or(PayloadError::Corrupt)?;
        pos += len;
        out.push(code);
    }
    if pos != body.len() {
        return Err(PayloadError::Corrupt);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode([&b"#!lua name=a\nx"[..], b"#!lua name=b\n\x00\xff"])
    }

    #[test]
    fn round_trip() {
        let p = sample();
        assert_eq!(
            decode(&p).unwrap(),
            vec![&b"#!lua name=a\nx"[..], b"#!lua name=b\n\x00\xff"]
        );
        assert_eq!(decode(&encode([])).unwrap(), Vec::<&[u8]>::new());
    }

    #[test]
    fn every_truncation_is_refused() {
        let p = sample();
        for n in 0..p.len() {
            assert!(decode(&p[..n]).is_err(), "truncated to {n}");
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let p = sample();
        for i in 0..p.len() {
            let mut q = p.clone();
            q[i] ^= 0x01;
            assert!(decode(&q).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn foreign_and_newer_payloads() {
        assert_eq!(decode(b"").unwrap_err(), PayloadError::Foreign);
        assert_eq!(decode(b"\x0f\x00hello").unwrap_err(), PayloadError::Foreign);
        let mut newer = sample();
        newer[6] = 9;
        let body_len = newer.len() - DIGEST_LEN;
        let digest = Sha1::digest(&newer[..body_len]);
        newer[body_len..].copy_from_slice(&digest);
        assert_eq!(decode(&newer).unwrap_err(), PayloadError::NewerVersion(9));
        let mut extra = sample();
        extra.insert(10, 0);
        assert_eq!(decode(&extra).unwrap_err(), PayloadError::Corrupt);
    }
}
