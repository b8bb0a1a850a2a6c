//! Bytes on the wire: request bodies that may hold a key share, and response bodies that may
//! hold new shares or a root token, both kept in buffers that are wiped when dropped.
//!
//! A request body is serialised into a `Zeroizing<Vec<u8>>` sized up front (so it never
//! reallocates and leaves an unwiped copy behind) and handed to reqwest as `Bytes` that own
//! that buffer: when hyper is done with the body the buffer is dropped and zeroized. A
//! response body is gathered chunk by chunk into a zeroizing buffer, and each chunk is wiped
//! when rebox holds its only reference. Copies inside hyper's or the kernel's socket buffers
//! are out of reach; everything rebox allocates is not.

use bytes::Bytes;
use serde::Serialize;
use zeroize::{Zeroize, Zeroizing};

/// Largest response body accepted; Vault's answers are a few KiB. A bigger body means the
/// address is not Vault.
pub const MAX_BODY: usize = 1 << 20;

/// Serialises `body` to JSON in a zeroizing buffer with room for `secret_len` secret bytes,
/// and returns it as `Bytes` that wipe the buffer when the last reference goes.
pub fn secret_json<T: Serialize>(body: &T, secret_len: usize) -> Bytes {
    // Worst case JSON escaping is 6 bytes per input byte (`\u0000`); hex/base64 need 1.
    // Field names fit in the slack. Enough room means no reallocation, so no stray copy.
    let mut buf = Zeroizing::new(Vec::with_capacity(secret_len * 6 + 256));
    serde_json::to_writer(&mut *buf, body).expect("serialising a struct of strings cannot fail");
    Bytes::from_owner(buf)
}

/// Plain (non-secret) JSON body.
pub fn json<T: Serialize>(body: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(body).expect("serialising a struct cannot fail"))
}

/// Why a body could not be read.
pub enum ReadError {
    Transport(reqwest::Error),
    TooLarge,
}

/// Reads the whole body into a zeroizing buffer.
pub async fn read_body(mut resp: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let hint = resp.content_length().unwrap_or(0).min(MAX_BODY as u64) as usize;
    let mut buf = Zeroizing::new(Vec::with_capacity(hint.max(1024)));
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transport)? {
        if buf.len() + chunk.len() > MAX_BODY {
            wipe(chunk);
            return Err(ReadError::TooLarge);
        }
        if buf.len() + chunk.len() > buf.capacity() {
            // Grow by copying into a new zeroizing buffer; the old one is wiped on drop
            // (Vec's own growth would free the old allocation without wiping it).
            let mut bigger = Zeroizing::new(Vec::with_capacity(
                (buf.len() + chunk.len()).max(buf.capacity() * 2),
            ));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        buf.extend_from_slice(&chunk);
        wipe(chunk);
    }
    Ok(buf)
}

/// Wipes a received chunk when this is its only reference.
fn wipe(chunk: Bytes) {
    if let Ok(mut m) = chunk.try_into_mut() {
        m.as_mut().zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_secret_json_body_is_plain_json() {
        #[derive(Serialize)]
        struct B<'a> {
            key: &'a str,
        }
        let b = secret_json(&B { key: "abcd" }, 4);
        assert_eq!(&b[..], br#"{"key":"abcd"}"#);
    }
}
