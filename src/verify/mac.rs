//! The HMAC machinery every scheme shares: keyed states computed once per secret, MAC values on
//! the stack, and decoding a signature's text into bytes with its length checked first.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::VerifyError;
use crate::config::model::HmacAlgorithm;

/// The longest MAC of a supported algorithm (SHA-512).
const MAX_MAC_LEN: usize = 64;

/// One secret's keyed HMAC state, computed at load and cloned per request, so the key schedule
/// (two compression-function calls) is not repeated for every webhook.
#[derive(Clone)]
pub(super) enum Key {
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
    /// Only for the generic scheme when `algorithm: sha1` is named (legacy senders).
    Sha1(Hmac<Sha1>),
}

impl Key {
    pub(super) fn new(algorithm: HmacAlgorithm, secret: &[u8]) -> Self {
        const ANY_LENGTH: &str = "HMAC takes keys of any length";
        match algorithm {
            HmacAlgorithm::Sha256 => Self::Sha256(Hmac::new_from_slice(secret).expect(ANY_LENGTH)),
            HmacAlgorithm::Sha512 => Self::Sha512(Hmac::new_from_slice(secret).expect(ANY_LENGTH)),
            HmacAlgorithm::Sha1 => Self::Sha1(Hmac::new_from_slice(secret).expect(ANY_LENGTH)),
        }
    }

    /// An HMAC-SHA256 key, the algorithm of every provider scheme.
    pub(super) fn sha256(secret: &[u8]) -> Self {
        Self::new(HmacAlgorithm::Sha256, secret)
    }

    /// Length of this key's MACs in bytes.
    pub(super) fn mac_len(&self) -> usize {
        match self {
            Self::Sha256(_) => 32,
            Self::Sha512(_) => 64,
            Self::Sha1(_) => 20,
        }
    }

    /// The MAC of the concatenation of `parts`.
    pub(super) fn mac(&self, parts: &[&[u8]]) -> MacBytes {
        // One match, then only the keyed state of this algorithm is copied (not the size of
        // the largest variant, as `start` does).
        fn run<M: Mac + Clone>(key: &M, parts: &[&[u8]]) -> MacBytes {
            let mut mac = key.clone();
            for part in parts {
                mac.update(part);
            }
            finalized(mac)
        }
        match self {
            Self::Sha256(key) => run(key, parts),
            Self::Sha512(key) => run(key, parts),
            Self::Sha1(key) => run(key, parts),
        }
    }

    /// A MAC computation to feed piece by piece.
    pub(super) fn start(&self) -> Running {
        Running(self.clone())
    }
}

/// A MAC being computed.
pub(super) struct Running(Key);

impl Running {
    pub(super) fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            Key::Sha256(mac) => mac.update(data),
            Key::Sha512(mac) => mac.update(data),
            Key::Sha1(mac) => mac.update(data),
        }
    }

    pub(super) fn finish(self) -> MacBytes {
        match self.0 {
            Key::Sha256(mac) => finalized(mac),
            Key::Sha512(mac) => finalized(mac),
            Key::Sha1(mac) => finalized(mac),
        }
    }
}

/// The finished MAC of `mac`, on the stack.
fn finalized<M: Mac>(mac: M) -> MacBytes {
    MacBytes::from_slice(&mac.finalize().into_bytes())
}

/// A MAC, computed or decoded from a header, held on the stack.
#[derive(Clone, Copy)]
pub(super) struct MacBytes {
    bytes: [u8; MAX_MAC_LEN],
    len: usize,
}

impl MacBytes {
    fn from_slice(slice: &[u8]) -> Self {
        let mut bytes = [0u8; MAX_MAC_LEN];
        bytes[..slice.len()].copy_from_slice(slice);
        Self {
            bytes,
            len: slice.len(),
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Whether `given` equals this MAC. The lengths are compared first (a length is not
    /// secret), then the bytes in constant time: all [`MAX_MAC_LEN`] of them (both are zero
    /// past their length), folded word by word into one difference that `subtle` compares
    /// with zero. Per byte, `subtle`'s slice comparison cost about as much as a SHA-256 block.
    pub(super) fn matches(&self, given: &MacBytes) -> bool {
        let words = |mac: &MacBytes| -> [u64; MAX_MAC_LEN / 8] {
            std::array::from_fn(|i| {
                let word: [u8; 8] = mac.bytes[8 * i..8 * i + 8].try_into().expect("8 bytes");
                u64::from_ne_bytes(word)
            })
        };
        let (ours, theirs) = (words(self), words(given));
        let difference = (ours.iter().zip(&theirs)).fold(0u64, |d, (a, b)| d | (a ^ b));
        self.len == given.len && bool::from(difference.ct_eq(&0))
    }

    pub(super) fn to_hex(self) -> String {
        encode_hex(self.as_bytes())
    }

    pub(super) fn to_base64(self) -> String {
        STANDARD.encode(self.as_bytes())
    }
}

/// Decodes a hex MAC of exactly `len` bytes (either letter case). The text's length is checked
/// before anything else is looked at.
pub(super) fn decode_hex(text: &[u8], len: usize) -> Result<MacBytes, VerifyError> {
    if len > MAX_MAC_LEN || text.len() != 2 * len {
        return Err(VerifyError::WrongLength);
    }
    let mut bytes = [0u8; MAX_MAC_LEN];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Ok(MacBytes { bytes, len })
}

fn hex_digit(c: u8) -> Result<u8, VerifyError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(VerifyError::Malformed),
    }
}

/// Lowercase hex, as the hex-signing providers send it.
pub(super) fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    text
}

/// Decodes a standard, padded base64 MAC of exactly `len` bytes. Text longer than the padded
/// encoding of `len` bytes is refused before decoding; otherwise text that is not canonical
/// padded base64 (RFC 4648 §4: its alphabet, `=` only as the padding of the last group, no
/// set bits after the last byte) is [`VerifyError::Malformed`], and a decoded length other
/// than `len` is [`VerifyError::WrongLength`] — what the `base64` crate's `STANDARD` engine
/// decides, which the tests check this against.
///
/// Written out here rather than calling that engine: this is the one decoding on every
/// request, and a table lookup per character took half the time of the engine's general
/// path (BENCHMARKS.md, "Verification").
pub(super) fn decode_base64(text: &[u8], len: usize) -> Result<MacBytes, VerifyError> {
    if len > MAX_MAC_LEN || text.len() > len.div_ceil(3) * 4 {
        return Err(VerifyError::WrongLength);
    }
    if text.len() % 4 != 0 {
        return Err(VerifyError::Malformed);
    }
    let padding = match text {
        [.., b'=', b'='] => 2,
        [.., b'='] => 1,
        _ => 0,
    };
    let symbols = &text[..text.len() - padding];
    // Room for what the longest text allowed above decodes to (66 bytes for 88 symbols).
    let mut bytes = [0u8; MAX_MAC_LEN + 3];
    let mut n = 0;
    let mut groups = symbols.chunks_exact(4);
    for group in &mut groups {
        let bits = sextets(group)?;
        bytes[n..n + 3].copy_from_slice(&bits.to_be_bytes()[1..]);
        n += 3;
    }
    let rest = groups.remainder();
    if !rest.is_empty() {
        // Two symbols carry one byte and four spare bits, three carry two bytes and two.
        let bits = sextets(rest)? << (6 * (4 - rest.len()));
        let carried = rest.len() - 1;
        let unused = 24 - 8 * carried;
        if bits & ((1 << unused) - 1) != 0 {
            return Err(VerifyError::Malformed);
        }
        bytes[n..n + carried].copy_from_slice(&bits.to_be_bytes()[1..1 + carried]);
        n += carried;
    }
    if n != len {
        return Err(VerifyError::WrongLength);
    }
    Ok(MacBytes::from_slice(&bytes[..n]))
}

/// Up to four base64 symbols as the low bits of a number, six per symbol.
fn sextets(symbols: &[u8]) -> Result<u32, VerifyError> {
    let mut bits = 0u32;
    for &symbol in symbols {
        let value = BASE64_VALUES[usize::from(symbol)];
        if value == NOT_BASE64 {
            return Err(VerifyError::Malformed);
        }
        bits = (bits << 6) | u32::from(value);
    }
    Ok(bits)
}

/// Marks the bytes that are not in the standard base64 alphabet.
const NOT_BASE64: u8 = 0xff;

/// Each byte's value in the standard base64 alphabet (RFC 4648, Table 1), or [`NOT_BASE64`].
const BASE64_VALUES: [u8; 256] = {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut values = [NOT_BASE64; 256];
    let mut i = 0;
    while i < 64 {
        values[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    values
};

/// Checks a provider's signature list before any MAC is computed: there must be an entry of a
/// known version (else [`VerifyError::NoKnownVersion`]: a bare or unknown-version list never
/// verifies), and at least one that `decode` accepts (else the first decoding error).
pub(super) fn require_usable<'a, T>(
    entries: impl Iterator<Item = &'a [u8]>,
    decode: impl Fn(&'a [u8]) -> Result<T, VerifyError>,
) -> Result<(), VerifyError> {
    let mut first_error = None;
    for entry in entries {
        match decode(entry) {
            Ok(_) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(VerifyError::NoKnownVersion))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4231, test case 2 (key "Jefe"), the HMAC-SHA-256 and HMAC-SHA-512 outputs:
    // https://www.rfc-editor.org/rfc/rfc4231#section-4.3
    const RFC4231_SHA256: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    const RFC4231_SHA512: &str = "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
                                  9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737";

    // RFC 2202, test case 2 (key "Jefe"), the HMAC-SHA-1 output:
    // https://www.rfc-editor.org/rfc/rfc2202#section-3
    const RFC2202_SHA1: &str = "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79";

    #[test]
    fn hmac_sha1_matches_rfc_2202_when_named() {
        let sha1 = Key::new(HmacAlgorithm::Sha1, b"Jefe");
        assert_eq!(sha1.mac_len(), 20);
        assert_eq!(
            sha1.mac(&[b"what do ya want for nothing?"]).to_hex(),
            RFC2202_SHA1
        );
    }

    #[test]
    fn hmac_primitives_match_rfc_4231() {
        let data: &[u8] = b"what do ya want for nothing?";
        let sha256 = Key::new(HmacAlgorithm::Sha256, b"Jefe");
        assert_eq!(sha256.mac(&[data]).to_hex(), RFC4231_SHA256);
        let sha512 = Key::new(HmacAlgorithm::Sha512, b"Jefe");
        assert_eq!(sha512.mac_len(), 64);
        // Fed in pieces, the MAC is the MAC of the concatenation.
        assert_eq!(
            sha512.mac(&[&data[..4], &data[4..]]).to_hex(),
            RFC4231_SHA512
        );
    }

    #[test]
    fn hex_round_trips_and_checks_length_first() {
        let bytes: Vec<u8> = (0..=255).collect();
        for len in [0usize, 1, 32, 64] {
            let text = encode_hex(&bytes[..len]);
            assert_eq!(
                decode_hex(text.as_bytes(), len).unwrap().as_bytes(),
                &bytes[..len]
            );
            let upper = text.to_ascii_uppercase();
            assert_eq!(
                decode_hex(upper.as_bytes(), len).unwrap().as_bytes(),
                &bytes[..len]
            );
        }
        assert_eq!(decode_hex(b"abc", 2).err(), Some(VerifyError::WrongLength));
        assert_eq!(decode_hex(b"zz", 1).err(), Some(VerifyError::Malformed));
        assert_eq!(decode_hex(b"+1", 1).err(), Some(VerifyError::Malformed));
        assert_eq!(
            decode_hex(&[b'a'; 130], 65).err(),
            Some(VerifyError::WrongLength)
        );
    }

    #[test]
    fn base64_checks_length_before_and_after_decoding() {
        let mac = Key::sha256(b"k").mac(&[b"body"]);
        let text = mac.to_base64();
        assert!(decode_base64(text.as_bytes(), 32).unwrap().matches(&mac));
        assert_eq!(
            decode_base64(b"aGVsbG8=", 32).err(),
            Some(VerifyError::WrongLength)
        );
        assert_eq!(
            decode_base64(&[b'A'; 45], 32).err(),
            Some(VerifyError::WrongLength)
        );
        assert_eq!(
            decode_base64(b"not base64!!", 32).err(),
            Some(VerifyError::Malformed)
        );
        assert_eq!(decode_base64(b"", 32).err(), Some(VerifyError::WrongLength));
    }

    /// The decoder against the `base64` crate's `STANDARD` engine: the same bytes for every
    /// valid encoding, and the same verdict (`Malformed` where the engine refuses the text,
    /// `WrongLength` where it decodes to another length) for every text one byte away from a
    /// valid one, and for a set of hand-picked edge cases.
    #[test]
    fn base64_decoding_agrees_with_the_base64_crate() {
        let engine = |text: &[u8], len: usize| -> Result<Vec<u8>, VerifyError> {
            if len > MAX_MAC_LEN || text.len() > len.div_ceil(3) * 4 {
                return Err(VerifyError::WrongLength);
            }
            let bytes = STANDARD.decode(text).map_err(|_| VerifyError::Malformed)?;
            match bytes.len() == len {
                true => Ok(bytes),
                false => Err(VerifyError::WrongLength),
            }
        };
        let ours =
            |text: &[u8], len: usize| decode_base64(text, len).map(|m| m.as_bytes().to_vec());
        let replacements = b"A/+=Z09az-_ \x00.\xff";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in [1usize, 2, 3, 20, 31, 32, 33, 64] {
            for _ in 0..24 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                let text = STANDARD.encode(&bytes).into_bytes();
                assert_eq!(ours(&text, len), Ok(bytes.clone()));
                for at in 0..text.len() {
                    for &replacement in replacements {
                        let mut changed = text.clone();
                        changed[at] = replacement;
                        for want in [len, len.saturating_sub(1), len + 1] {
                            assert_eq!(
                                ours(&changed, want),
                                engine(&changed, want),
                                "{:?} as {want} bytes",
                                String::from_utf8_lossy(&changed)
                            );
                        }
                    }
                }
            }
        }
        for text in [
            &b""[..],
            b"=",
            b"==",
            b"A===",
            b"AA==",
            b"AB==",
            b"AAA=",
            b"AAB=",
            b"AAAA",
            b"AA=A",
            b"A=AA",
            b"AAAA====",
            b"AAAAAA",
            b"====",
            b"QUJD\n",
            b" QUJD",
        ] {
            for len in 0..4 {
                assert_eq!(
                    ours(text, len),
                    engine(text, len),
                    "{text:?} as {len} bytes"
                );
            }
        }
    }

    #[test]
    fn matches_requires_equal_length_and_bytes() {
        let a = Key::sha256(b"k").mac(&[b"x"]);
        let b = Key::sha256(b"k").mac(&[b"y"]);
        let long = Key::new(HmacAlgorithm::Sha512, b"k").mac(&[b"x"]);
        assert!(a.matches(&a));
        assert!(!a.matches(&b));
        assert!(!a.matches(&long));
        assert!(!long.matches(&a));
    }
}
