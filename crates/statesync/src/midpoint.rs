//! The midpoint of a key range, as x/sync's `midPoint` computes it.
//!
//! Keys are read as base-256 fractions (`[0x80]` is one half): an unbounded start counts as all
//! zero bytes and an unbounded end as all `0xff` bytes. The midpoint is their average, digit by
//! digit from the most significant, carrying a half into the next digit; a half left over after
//! the last digit becomes a final `0x7f` byte. When the start ends in `0xff` and the end does
//! too (or is unbounded) one more digit is used, so `midpoint([ff], ∞)` is `[ff 7f 7f]`, past
//! `[ff]`. The result must equal upstream's byte for byte: clients split ranges at these keys.

/// The midpoint of `start` and `end`; `None` bounds are unbounded. `None` only for the range
/// from the empty key to the empty key.
#[must_use]
pub fn midpoint(start: Option<&[u8]>, end: Option<&[u8]>) -> Option<Vec<u8>> {
    let s = start.unwrap_or_default();
    let e = end.unwrap_or_default();
    let mut digits = s.len().max(e.len());
    if digits == 0 {
        return end.is_none().then(|| vec![0x7f]);
    }
    let start_ends_ff = s.last() == Some(&0xff);
    let end_ends_ff = e.last().is_none_or(|b| *b == 0xff);
    if start_ends_ff && end_ends_ff {
        digits += 1;
    }
    let end_pad: u32 = if end.is_none() { 0xff } else { 0 };
    let mut out = vec![0u8; digits];
    let mut half = 0u32; // 256 when the previous digit's sum was odd
    for i in 0..digits {
        let a = s.get(i).map_or(0, |&b| u32::from(b));
        let b = e.get(i).map_or(end_pad, |&b| u32::from(b));
        let sum = a + b + half;
        half = if sum % 2 == 1 { 256 } else { 0 };
        let mut digit = sum / 2;
        if digit >= 256 {
            digit -= 256;
            carry_into(&mut out[..i]);
        }
        out[i] = digit as u8;
    }
    if half > 0 {
        out.push(0x7f);
    }
    Some(out)
}

/// Adds one to the base-256 number `digits` (upstream stops at the first digit).
fn carry_into(digits: &mut [u8]) {
    let mut i = digits.len();
    while i > 1 && digits[i - 1] == 0xff {
        digits[i - 1] = 0;
        i -= 1;
    }
    if let Some(d) = digits.get_mut(i.saturating_sub(1)) {
        *d = d.wrapping_add(1);
    }
}
