//! Shamir secret sharing for the Vault stand-in, in Vault's share layout.
//!
//! Contract followed: Vault's `shamir` package as described in
//! `../shared/reference/platform-facts.md` §1 (unseal/init/rekey) and
//! `../shared/reference/rust-stack.md` ("Shamir for the Vault stand-in"): a share is the
//! secret's length plus one byte, the polynomial values first and the x-coordinate byte
//! LAST; x-coordinates are distinct, random, in 1..=255; `combine` refuses fewer than two
//! parts, parts of unequal length and duplicate x-coordinates with Vault's messages.
//!
//! The field arithmetic comes from `blahaj` (the maintained fork of `sharks`, which fixed
//! sharks' biased coefficients). Left out: byte-compatibility with shares made by a real
//! Vault (the GF(256) representation may differ), which the lab never needs.

use rand::seq::SliceRandom;

/// Extra bytes a share carries beyond the secret (Vault's `shamir.ShareOverhead`).
pub const SHARE_OVERHEAD: usize = 1;

/// Splits `secret` into `parts` shares of which any `threshold` recover it.
/// Errors mirror Vault's `shamir.Split`.
pub fn split(secret: &[u8], parts: usize, threshold: usize) -> Result<Vec<Vec<u8>>, String> {
    if parts < threshold {
        return Err("parts cannot be less than threshold".into());
    }
    if parts > 255 {
        return Err("parts cannot exceed 255".into());
    }
    if threshold < 2 {
        return Err("threshold must be at least 2".into());
    }
    if threshold > 255 {
        return Err("threshold cannot exceed 255".into());
    }
    if secret.is_empty() {
        return Err("cannot split an empty secret".into());
    }
    // blahaj evaluates the polynomials at x = 1..=255 in order; Vault picks the
    // x-coordinates at random, so evaluate them all and keep a random selection.
    let mut all: Vec<blahaj::Share> = blahaj::Sharks(threshold as u8)
        .dealer(secret)
        .take(255)
        .collect();
    all.shuffle(&mut rand::thread_rng());
    Ok(all
        .iter()
        .take(parts)
        .map(|share| {
            let bytes: Vec<u8> = share.into();
            // blahaj: [x, y...]  →  Vault: [y..., x]
            let mut out = bytes[1..].to_vec();
            out.push(bytes[0]);
            out
        })
        .collect())
}

/// Recombines Vault-layout shares. Errors mirror Vault's `shamir.Combine`.
pub fn combine(parts: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    if parts.len() < 2 {
        return Err("less than two parts cannot be used to reconstruct the secret".into());
    }
    let len = parts[0].len();
    if len < 2 {
        return Err("parts must be at least two bytes".into());
    }
    let mut seen = [false; 256];
    let mut shares = Vec::with_capacity(parts.len());
    for part in parts {
        if part.len() != len {
            return Err("all parts must be the same length".into());
        }
        let x = part[len - 1];
        if seen[x as usize] {
            return Err("duplicate part detected".into());
        }
        seen[x as usize] = true;
        let mut bytes = Vec::with_capacity(len);
        bytes.push(x);
        bytes.extend_from_slice(&part[..len - 1]);
        shares.push(blahaj::Share::try_from(bytes.as_slice()).map_err(|e| e.to_string())?);
    }
    blahaj::Sharks(parts.len() as u8)
        .recover(&shares)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_shamir_roundtrip_any_threshold_subset() {
        let secret: Vec<u8> = (0u8..32).collect();
        let shares = split(&secret, 5, 3).unwrap();
        assert_eq!(shares.len(), 5);
        assert!(shares.iter().all(|s| s.len() == 33));
        assert_eq!(combine(&shares[0..3]).unwrap(), secret);
        assert_eq!(combine(&shares[2..5]).unwrap(), secret);
        assert_ne!(combine(&shares[0..2]).unwrap(), secret);
    }

    #[test]
    fn vault_shamir_x_coordinate_last_and_distinct() {
        let shares = split(&[7u8; 32], 10, 2).unwrap();
        let mut xs: Vec<u8> = shares.iter().map(|s| s[32]).collect();
        assert!(xs.iter().all(|&x| x != 0));
        xs.sort();
        xs.dedup();
        assert_eq!(xs.len(), 10);
    }

    #[test]
    fn vault_shamir_combine_refuses_like_vault() {
        let shares = split(&[1u8; 32], 3, 2).unwrap();
        assert_eq!(
            combine(&shares[0..1]).unwrap_err(),
            "less than two parts cannot be used to reconstruct the secret"
        );
        assert_eq!(
            combine(&[shares[0].clone(), shares[0].clone()]).unwrap_err(),
            "duplicate part detected"
        );
        assert_eq!(
            combine(&[shares[0].clone(), vec![1u8; 10]]).unwrap_err(),
            "all parts must be the same length"
        );
        assert_eq!(
            split(&[1u8; 32], 2, 3).unwrap_err(),
            "parts cannot be less than threshold"
        );
    }
}
