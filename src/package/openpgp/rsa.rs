//! RSA PKCS#1 v1.5 signature verification over a precomputed digest (RFC 8017 §8.2.2).
//!
//! OpenPGP signs a digest the agent computes while the package streams from disk; `ring`
//! verifies RSA only over a whole message in memory, so the public-key operation is done
//! here: `s^e mod n` with Montgomery multiplication on 32-bit limbs. Only public values are
//! involved (the modulus, the exponent and the signature), so nothing needs constant time.
//! The result is compared, whole, with the encoding the digest must have — nothing of the
//! decrypted block is parsed.

/// Smallest modulus accepted: 2048 bits (NIST SP 800-131A; gpg's default is 3072).
pub const MIN_BITS: usize = 2048;
/// Largest modulus accepted (gpg creates at most 4096; 8192 still verifies in milliseconds).
pub const MAX_BITS: usize = 8192;

/// DER `DigestInfo` prefixes (RFC 8017 §9.2, note 1) for the digests OpenPGP verification allows.
pub fn digest_info_prefix(hash_len: usize) -> Option<&'static [u8]> {
    const SHA256: &[u8] = &[
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    const SHA384: &[u8] = &[
        0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        0x05, 0x00, 0x04, 0x30,
    ];
    const SHA512: &[u8] = &[
        0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        0x05, 0x00, 0x04, 0x40,
    ];
    match hash_len {
        32 => Some(SHA256),
        48 => Some(SHA384),
        64 => Some(SHA512),
        _ => None,
    }
}

/// Checks an RSA public key's size and shape; `n` and `e` are big-endian without leading zeros
/// (as OpenPGP MPIs are).
pub fn check_key(n: &[u8], e: &[u8]) -> Result<(), String> {
    let bits = bit_len(n);
    if bits < MIN_BITS {
        return Err(format!(
            "its RSA key has {bits} bits; at least {MIN_BITS} are required"
        ));
    }
    if bits > MAX_BITS {
        return Err(format!(
            "its RSA key has {bits} bits; at most {MAX_BITS} are supported"
        ));
    }
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err("its RSA modulus is even: not an RSA key".into());
    }
    // e = 1 would make every "signature" equal its message; e must be odd and > 1. At most 33
    // bits (as ring, and every real key: 65537): a huge exponent only makes verification slow.
    if bit_len(e) < 2 || bit_len(e) > 33 || e.last().is_none_or(|b| b & 1 == 0) {
        return Err("its RSA public exponent is invalid".into());
    }
    Ok(())
}

/// Verifies the PKCS#1 v1.5 signature `sig` over `digest` (32, 48 or 64 bytes: SHA-256/384/512)
/// with the public key (`n`, `e`), checked by [`check_key`] first.
pub fn verify(n: &[u8], e: &[u8], digest: &[u8], sig: &[u8]) -> Result<(), String> {
    check_key(n, e)?;
    let n = strip_zeros(n);
    let prefix = digest_info_prefix(digest.len()).ok_or("unsupported digest length")?;
    let k = n.len();
    // EM = 0x00 0x01 PS(0xff, at least 8) 0x00 DigestInfo digest, k bytes.
    let t_len = prefix.len() + digest.len();
    if k < t_len + 11 {
        return Err("the RSA key is too short for this digest".into());
    }
    let mut expected = Vec::with_capacity(k);
    expected.extend_from_slice(&[0x00, 0x01]);
    expected.resize(k - t_len - 1, 0xff);
    expected.push(0x00);
    expected.extend_from_slice(prefix);
    expected.extend_from_slice(digest);

    let n_l = from_be(n);
    let s_l = from_be(strip_zeros(sig));
    if s_l.len() > n_l.len() || cmp(&pad(&s_l, n_l.len()), &n_l) != core::cmp::Ordering::Less {
        return Err("the RSA signature is not smaller than the modulus".into());
    }
    let m = mod_pow(&pad(&s_l, n_l.len()), e, &n_l);
    if to_be(&m, k) == expected {
        Ok(())
    } else {
        Err("the RSA signature does not match the digest".into())
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

fn bit_len(b: &[u8]) -> usize {
    let b = strip_zeros(b);
    match b.first() {
        Some(&top) => (b.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    }
}

/// Big-endian bytes → little-endian 32-bit limbs.
fn from_be(b: &[u8]) -> Vec<u32> {
    let b = strip_zeros(b);
    let mut limbs = Vec::with_capacity(b.len().div_ceil(4));
    for chunk in b.rchunks(4) {
        let mut v = 0u32;
        for &x in chunk {
            v = (v << 8) | u32::from(x);
        }
        limbs.push(v);
    }
    limbs
}

/// Little-endian limbs → `len` big-endian bytes (the value fits: it is below the modulus).
fn to_be(limbs: &[u32], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    for (i, limb) in limbs.iter().enumerate() {
        for j in 0..4 {
            let byte = (limb >> (8 * j)) as u8;
            let pos = i * 4 + j;
            if pos < len {
                out[len - 1 - pos] = byte;
            }
        }
    }
    out
}

fn pad(a: &[u32], len: usize) -> Vec<u32> {
    let mut v = a.to_vec();
    v.resize(len.max(a.len()), 0);
    v
}

fn cmp(a: &[u32], b: &[u32]) -> core::cmp::Ordering {
    debug_assert_eq!(a.len(), b.len());
    for i in (0..a.len()).rev() {
        match a[i].cmp(&b[i]) {
            core::cmp::Ordering::Equal => continue,
            other => return other,
        }
    }
    core::cmp::Ordering::Equal
}

/// a -= b (same length, a ≥ b as numbers including the extra high word `a_hi`).
fn sub_in_place(a: &mut [u32], b: &[u32]) -> u32 {
    let mut borrow = 0u64;
    for i in 0..a.len() {
        let d = u64::from(a[i])
            .wrapping_sub(u64::from(b[i]))
            .wrapping_sub(borrow);
        a[i] = d as u32;
        borrow = (d >> 63) & 1;
    }
    borrow as u32
}

/// (a + a) mod n for a < n.
fn double_mod(a: &mut [u32], n: &[u32]) {
    let mut carry = 0u32;
    for x in a.iter_mut() {
        let next = *x >> 31;
        *x = (*x << 1) | carry;
        carry = next;
    }
    if carry == 1 || cmp(a, n) != core::cmp::Ordering::Less {
        sub_in_place(a, n);
    }
}

/// -n0^{-1} mod 2^32 (n0 odd), by Newton's iteration.
fn neg_inv(n0: u32) -> u32 {
    let mut x: u32 = 1;
    for _ in 0..5 {
        x = x.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(x)));
    }
    x.wrapping_neg()
}

/// Montgomery product a·b·R⁻¹ mod n (R = 2^(32·len)), a, b < n.
fn mont_mul(a: &[u32], b: &[u32], n: &[u32], n_inv: u32) -> Vec<u32> {
    let len = n.len();
    let mut t = vec![0u32; len + 2];
    for &ai in a {
        let mut carry = 0u64;
        for j in 0..len {
            let v = u64::from(t[j]) + u64::from(ai) * u64::from(b[j]) + carry;
            t[j] = v as u32;
            carry = v >> 32;
        }
        let v = u64::from(t[len]) + carry;
        t[len] = v as u32;
        t[len + 1] = (v >> 32) as u32;

        let m = t[0].wrapping_mul(n_inv);
        let v = u64::from(t[0]) + u64::from(m) * u64::from(n[0]);
        let mut carry = v >> 32;
        for j in 1..len {
            let v = u64::from(t[j]) + u64::from(m) * u64::from(n[j]) + carry;
            t[j - 1] = v as u32;
            carry = v >> 32;
        }
        let v = u64::from(t[len]) + carry;
        t[len - 1] = v as u32;
        let v = u64::from(t[len + 1]) + (v >> 32);
        t[len] = v as u32;
        t[len + 1] = 0;
    }
    let mut r = t[..len].to_vec();
    if t[len] != 0 || cmp(&r, n) != core::cmp::Ordering::Less {
        sub_in_place(&mut r, n);
    }
    r
}

/// base^e mod n; `base` < n and padded to n's length, n odd.
fn mod_pow(base: &[u32], e: &[u8], n: &[u32]) -> Vec<u32> {
    let len = n.len();
    let n_inv = neg_inv(n[0]);
    // base·R mod n by doubling (32·len times): no division needed.
    let mut base_m = base.to_vec();
    for _ in 0..32 * len {
        double_mod(&mut base_m, n);
    }
    let mut acc = base_m.clone();
    let bits = bit_len(e);
    let e = strip_zeros(e);
    for i in (0..bits.saturating_sub(1)).rev() {
        acc = mont_mul(&acc, &acc, n, n_inv);
        let byte = e[e.len() - 1 - i / 8];
        if (byte >> (i % 8)) & 1 == 1 {
            acc = mont_mul(&acc, &base_m, n, n_inv);
        }
    }
    let mut one = vec![0u32; len];
    one[0] = 1;
    mont_mul(&acc, &one, n, n_inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(v: u128) -> Vec<u8> {
        strip_zeros(&v.to_be_bytes()).to_vec()
    }

    fn pow_ref(b: u128, mut e: u128, n: u128) -> u128 {
        // n < 2^64 so products fit.
        let mut r = 1u128;
        let mut b = b % n;
        while e > 0 {
            if e & 1 == 1 {
                r = r * b % n;
            }
            b = b * b % n;
            e >>= 1;
        }
        r
    }

    #[test]
    fn modular_exponentiation_matches_a_reference_on_small_numbers() {
        let moduli: [u128; 4] = [
            0xffff_ffff_ffff_ffc5,
            0x8000_0000_0000_0001,
            0x1_0000_0001,
            0xd5a7_c3b1_0000_0003,
        ];
        for n in moduli {
            for (b, e) in [(2u128, 65537u128), (n - 1, 3), (12345, 0xfffff), (1, 7)] {
                let nl = pad(&from_be(&be(n)), from_be(&be(n)).len());
                let got = mod_pow(&pad(&from_be(&be(b)), nl.len()), &be(e), &nl);
                let want = pow_ref(b, e, n);
                assert_eq!(
                    to_be(&got, 16),
                    want.to_be_bytes().to_vec(),
                    "{b}^{e} mod {n}"
                );
            }
        }
    }

    #[test]
    fn keys_too_small_even_or_with_a_bad_exponent_are_refused() {
        let mut n = vec![0xc5u8; 256];
        assert!(check_key(&n, &[1, 0, 1]).is_ok());
        assert!(
            check_key(&n[..128], &[1, 0, 1])
                .unwrap_err()
                .contains("1024 bits")
        );
        n[255] = 0xc4;
        assert!(check_key(&n, &[1, 0, 1]).unwrap_err().contains("even"));
        n[255] = 0xc5;
        assert!(check_key(&n, &[1]).is_err());
        assert!(check_key(&n, &[2]).is_err());
        assert!(check_key(&n, &[]).is_err());
        assert!(check_key(&n, &[1, 0xff, 0xff, 0xff, 0xff]).is_ok()); // 33 bits
        assert!(check_key(&n, &[3, 0, 0, 0, 1]).is_err()); // 34 bits
    }

    #[test]
    fn a_signature_not_below_the_modulus_is_refused() {
        let n = vec![0xc5u8; 256];
        let digest = [0u8; 32];
        let e = verify(&n, &[1, 0, 1], &digest, &[0xff; 256]).unwrap_err();
        assert!(e.contains("not smaller"), "{e}");
        let e = verify(&n, &[1, 0, 1], &digest, &[0xff; 300]).unwrap_err();
        assert!(e.contains("not smaller"), "{e}");
        assert!(verify(&n, &[1, 0, 1], &digest, &[0x01; 200]).is_err());
    }
}

#[cfg(test)]
mod reference_tests {
    //! Montgomery arithmetic against a schoolbook reference (shift-and-add modular
    //! multiplication on little-endian limbs), on multi-limb moduli with hostile shapes.
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 16) as u32
        }
    }

    fn ge(a: &[u32], b: &[u32]) -> bool {
        cmp(a, b) != core::cmp::Ordering::Less
    }

    /// (a + b) mod n, a, b < n.
    fn add_mod(a: &[u32], b: &[u32], n: &[u32]) -> Vec<u32> {
        let mut r = vec![0u32; a.len()];
        let mut carry = 0u64;
        for i in 0..a.len() {
            let v = u64::from(a[i]) + u64::from(b[i]) + carry;
            r[i] = v as u32;
            carry = v >> 32;
        }
        if carry == 1 || ge(&r, n) {
            let mut borrow = 0i64;
            for i in 0..r.len() {
                let v = i64::from(r[i]) - i64::from(n[i]) - borrow;
                r[i] = v as u32;
                borrow = i64::from(v < 0);
            }
        }
        r
    }

    fn mul_mod_ref(a: &[u32], b: &[u32], n: &[u32]) -> Vec<u32> {
        let mut r = vec![0u32; n.len()];
        for i in (0..a.len() * 32).rev() {
            r = add_mod(&r, &r.clone(), n);
            if (a[i / 32] >> (i % 32)) & 1 == 1 {
                r = add_mod(&r, b, n);
            }
        }
        r
    }

    fn pow_mod_ref(b: &[u32], e: u64, n: &[u32]) -> Vec<u32> {
        let mut r = vec![0u32; n.len()];
        r[0] = 1;
        if n.len() == 1 && n[0] == 1 {
            r[0] = 0;
        }
        for i in (0..64).rev() {
            r = mul_mod_ref(&r, &r, n);
            if (e >> i) & 1 == 1 {
                r = mul_mod_ref(&r, b, n);
            }
        }
        r
    }

    fn below(rng: &mut Rng, n: &[u32], shape: u32) -> Vec<u32> {
        let mut a: Vec<u32> = match shape % 4 {
            0 => (0..n.len()).map(|_| rng.next()).collect(),
            1 => vec![u32::MAX; n.len()],
            2 => {
                let mut v = vec![0u32; n.len()];
                v[0] = 1 + rng.next() % 3;
                v
            }
            _ => n.to_vec(),
        };
        // Bring it below n: n - 1 - (something small), or clear the top limb.
        if ge(&a, n) {
            a = n.to_vec();
            let dec = 1 + rng.next() % 5;
            let mut borrow = u64::from(dec);
            for x in a.iter_mut() {
                let v = u64::from(*x).wrapping_sub(borrow);
                *x = v as u32;
                borrow = (v >> 63) & 1;
            }
        }
        a
    }

    #[test]
    fn montgomery_exponentiation_matches_schoolbook_on_multi_limb_moduli() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut moduli: Vec<Vec<u32>> = Vec::new();
        for len in 1..=9 {
            for shape in 0..6 {
                let mut n: Vec<u32> = (0..len).map(|_| rng.next()).collect();
                match shape {
                    0 => {}
                    1 => n.iter_mut().for_each(|x| *x = u32::MAX),
                    2 => {
                        n.iter_mut().for_each(|x| *x = 0);
                        n[0] = 1;
                    }
                    3 => n[0] = u32::MAX,
                    4 => n[0] = 1,
                    _ => {
                        n.iter_mut().for_each(|x| *x = u32::MAX);
                        n[0] = 0x8000_0001;
                    }
                }
                n[0] |= 1;
                let top = len - 1;
                if n[top] == 0 {
                    n[top] = 1 + rng.next() % 7;
                }
                moduli.push(n);
            }
        }
        for n in &moduli {
            if n.len() == 1 && n[0] == 1 {
                continue;
            }
            let n_inv = neg_inv(n[0]);
            assert_eq!(n[0].wrapping_mul(n_inv), u32::MAX, "neg_inv({:#x})", n[0]);
            for round in 0..8u32 {
                let b = below(&mut rng, n, round);
                let e: u64 = match round {
                    0 => 3,
                    1 => 65537,
                    2 => u64::MAX,
                    3 => (1 << 32) + 1,
                    _ => u64::from(rng.next()) << 32 | u64::from(rng.next()) | 1,
                };
                let e_be = e.to_be_bytes();
                let got = mod_pow(&b, &e_be, n);
                let want = pow_mod_ref(&b, e, n);
                assert_eq!(got, want, "{b:x?}^{e} mod {n:x?}");
                // And a product of two values, through the R conversion.
                let c = below(&mut rng, n, round + 1);
                let mut bm = b.clone();
                for _ in 0..32 * n.len() {
                    double_mod(&mut bm, n);
                }
                let prod = mont_mul(&bm, &c, n, n_inv);
                assert_eq!(prod, mul_mod_ref(&b, &c, n), "{b:x?}*{c:x?} mod {n:x?}");
            }
        }
    }
}
