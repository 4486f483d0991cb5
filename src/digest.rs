//! Digests written as text: lower-case hex, as cache keys and anonymous tenants carry them.
//! Request paths write one or two per call, so this has `hex` write into one buffer
//! (`encode_to_slice`) instead of collecting characters one at a time (`encode`).

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = vec![0; bytes.len() * 2];
    // The buffer is twice as long as `bytes`, the one length `encode_to_slice` accepts, and
    // hex digits are ASCII: neither step can fail.
    let _ = ::hex::encode_to_slice(bytes, &mut text);
    String::from_utf8(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_the_hex_crate_writes() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex(&bytes), ::hex::encode(&bytes));
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x0f, 0xa0]), "0fa0");
    }
}
