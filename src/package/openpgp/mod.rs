//! A verify-only OpenPGP reader (RFC 9580 / RFC 4880): public keys and detached signatures,
//! binary or ASCII-armored — what `gpg --export` and `gpg --detach-sign` produce.
//!
//! Supported: version 4 keys and signatures; RSA (PKCS#1 v1.5, 2048–8192 bits), Ed25519 (the
//! legacy EdDSA form gpg writes, and the RFC 9580 form); SHA-256, SHA-384 and SHA-512. Everything
//! else is refused with a message naming what was found: v3/v5/v6 packets, DSA, ECDSA, Ed448,
//! MD5, SHA-1 (chosen-prefix collisions), SHA-224, SHA-3. Signature types: binary and text
//! documents, and the key's own certifications, bindings and revocations.
//!
//! A key is usable when at least one of its self-signatures verifies; invalid self-signatures
//! are ignored (as gpg does). Its primary key signs only when its newest self-signature allows
//! signing (or says nothing); a subkey only when its newest binding marks it for signing, it
//! carries a valid back-signature (the subkey's own signature over the binding), and it is
//! neither revoked nor expired (nor valid past its primary key's expiry). Every length is
//! checked against the input: nothing here panics
//! or allocates on a length it has not seen bytes for.
//!
//! Streaming: [`DataHasher`] takes the signed file in chunks, so a package is hashed from disk.

mod rsa;

use base64::Engine;
use ring::digest;

/// A packet header that promises more than the input holds, or a structure that makes no sense.
fn short(what: &str) -> String {
    format!("truncated or malformed {what}")
}

// ---------------------------------------------------------------------------------------------
// Armor (RFC 9580 §6)

/// Removes ASCII armor when the input is armored; returns the label (`PUBLIC KEY BLOCK`,
/// `SIGNATURE`, …) and the binary packets. Binary input is returned unchanged, label `None`.
pub fn dearmor(input: &[u8]) -> Result<(Option<String>, Vec<u8>), String> {
    let first = input.iter().position(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err("empty input".into()),
        Some(i) if input[i] & 0x80 != 0 => return Ok((None, input[i..].to_vec())),
        Some(_) => {}
    }
    let text = std::str::from_utf8(input).map_err(|_| "neither binary OpenPGP nor ASCII armor")?;
    let mut lines = text.lines().map(str::trim_end);
    let label = loop {
        let Some(line) = lines.next() else {
            return Err("no \"-----BEGIN PGP\" armor line".into());
        };
        if let Some(rest) = line.strip_prefix("-----BEGIN PGP ") {
            break rest
                .strip_suffix("-----")
                .ok_or("malformed armor header line")?;
        }
    };
    let mut body = String::new();
    let mut crc = None;
    let mut in_headers = true;
    let mut ended = false;
    for line in lines {
        let line = line.trim();
        if line.starts_with("-----END PGP ") {
            ended = true;
            break;
        }
        if in_headers {
            if line.is_empty() {
                in_headers = false;
                continue;
            }
            if line.contains(": ") {
                continue;
            }
            in_headers = false;
        }
        if let Some(sum) = line.strip_prefix('=') {
            crc = Some(sum.to_string());
            continue;
        }
        body.push_str(line);
    }
    if !ended {
        return Err("armor has no \"-----END PGP\" line".into());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|_| "armor body is not valid base64")?;
    if let Some(sum) = crc {
        let want = base64::engine::general_purpose::STANDARD
            .decode(sum.as_bytes())
            .map_err(|_| "armor checksum is not valid base64")?;
        let got = crc24(&bytes).to_be_bytes();
        if want.as_slice() != &got[1..] {
            return Err("armor checksum does not match its content".into());
        }
    }
    Ok((Some(label.to_string()), bytes))
}

fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0x00b7_04ce;
    for &b in data {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= 0x0186_4cfb;
            }
        }
    }
    crc & 0x00ff_ffff
}

// ---------------------------------------------------------------------------------------------
// Packets (RFC 9580 §4)

const TAG_SIGNATURE: u8 = 2;
const TAG_SECRET_KEY: u8 = 5;
const TAG_PUBLIC_KEY: u8 = 6;
const TAG_SECRET_SUBKEY: u8 = 7;
const TAG_USER_ID: u8 = 13;
const TAG_PUBLIC_SUBKEY: u8 = 14;
const TAG_USER_ATTRIBUTE: u8 = 17;

/// Most packets read from one key or signature file.
const MAX_PACKETS: usize = 4096;
/// Most self-signatures (and bindings) of one key that are checked.
const MAX_SELF_SIGNATURES: usize = 256;

#[derive(Debug)]
struct Packet<'a> {
    tag: u8,
    body: &'a [u8],
}

fn take<'a>(data: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
    if data.len() < n {
        return Err(short(what));
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Ok(head)
}

fn be_uint(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |acc, &x| (acc << 8) | u32::from(x))
}

fn packets(mut data: &[u8]) -> Result<Vec<Packet<'_>>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if out.len() == MAX_PACKETS {
            return Err(format!("more than {MAX_PACKETS} packets"));
        }
        let head = take(&mut data, 1, "packet header")?[0];
        if head & 0x80 == 0 {
            return Err("not an OpenPGP packet (bad header byte)".into());
        }
        let (tag, len) = if head & 0x40 != 0 {
            let tag = head & 0x3f;
            let o1 = take(&mut data, 1, "packet length")?[0];
            let len = match o1 {
                0..=191 => usize::from(o1),
                192..=223 => {
                    let o2 = take(&mut data, 1, "packet length")?[0];
                    ((usize::from(o1) - 192) << 8) + usize::from(o2) + 192
                }
                255 => be_uint(take(&mut data, 4, "packet length")?) as usize,
                _ => {
                    return Err(
                        "partial-length packet (streamed data) where a key or signature was expected"
                            .into(),
                    );
                }
            };
            (tag, len)
        } else {
            let tag = (head >> 2) & 0x0f;
            let len = match head & 3 {
                0 => usize::from(take(&mut data, 1, "packet length")?[0]),
                1 => be_uint(take(&mut data, 2, "packet length")?) as usize,
                2 => be_uint(take(&mut data, 4, "packet length")?) as usize,
                _ => data.len(),
            };
            (tag, len)
        };
        let body = take(&mut data, len, "packet")?;
        out.push(Packet { tag, body });
    }
    Ok(out)
}

/// An MPI (2-byte bit count, then the bytes), returned without leading zeros.
fn mpi<'a>(data: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let bits = be_uint(take(data, 2, "MPI")?) as usize;
    let bytes = take(data, bits.div_ceil(8), "MPI")?;
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    Ok(&bytes[first..])
}

// ---------------------------------------------------------------------------------------------
// Algorithms

const ALGO_RSA: u8 = 1;
const ALGO_RSA_SIGN: u8 = 3;
const ALGO_EDDSA_LEGACY: u8 = 22;
const ALGO_ED25519: u8 = 27;
/// OID 1.3.6.1.4.1.11591.15.1 (Ed25519 in the legacy EdDSA encoding).
const OID_ED25519: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x0f, 0x01];

fn algo_name(a: u8) -> String {
    match a {
        1..=3 => "RSA".into(),
        16 | 20 => "ElGamal".into(),
        17 => "DSA".into(),
        18 => "ECDH".into(),
        19 => "ECDSA".into(),
        22 => "EdDSA".into(),
        25 => "X25519".into(),
        26 => "X448".into(),
        27 => "Ed25519".into(),
        28 => "Ed448".into(),
        _ => format!("algorithm {a}"),
    }
}

fn hash_name(h: u8) -> String {
    match h {
        1 => "MD5".into(),
        2 => "SHA-1".into(),
        3 => "RIPEMD-160".into(),
        8 => "SHA-256".into(),
        9 => "SHA-384".into(),
        10 => "SHA-512".into(),
        11 => "SHA-224".into(),
        12 => "SHA3-256".into(),
        14 => "SHA3-512".into(),
        _ => format!("hash algorithm {h}"),
    }
}

fn hash_algorithm(h: u8) -> Result<&'static digest::Algorithm, String> {
    match h {
        8 => Ok(&digest::SHA256),
        9 => Ok(&digest::SHA384),
        10 => Ok(&digest::SHA512),
        1..=3 => Err(format!(
            "it uses {}, which is refused as too weak (sign with SHA-256 or stronger)",
            hash_name(h)
        )),
        _ => Err(format!(
            "it uses {}, which is not supported (SHA-256, SHA-384 or SHA-512 are)",
            hash_name(h)
        )),
    }
}

/// The public numbers of a key, parsed for the algorithms that can verify here.
#[derive(Debug, Clone)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ed25519([u8; 32]),
    /// A key of another algorithm (kept for its fingerprint; never verifies): why.
    Unsupported(String),
}

/// A version 4 public key or subkey packet.
#[derive(Debug, Clone)]
pub struct KeyPacket {
    body: Vec<u8>,
    created: u32,
    material: Material,
    fingerprint: [u8; 20],
}

impl KeyPacket {
    fn parse(body: &[u8]) -> Result<KeyPacket, String> {
        let mut d = body;
        let version = take(&mut d, 1, "key packet")?[0];
        if version != 4 {
            return Err(format!(
                "version {version} key packets are not supported (only version 4, gpg's format)"
            ));
        }
        if body.len() > usize::from(u16::MAX) {
            return Err(short("key packet"));
        }
        let created = be_uint(take(&mut d, 4, "key packet")?);
        let algo = take(&mut d, 1, "key packet")?[0];
        let material = match algo {
            ALGO_RSA | ALGO_RSA_SIGN => {
                let n = mpi(&mut d)?.to_vec();
                let e = mpi(&mut d)?.to_vec();
                match rsa::check_key(&n, &e) {
                    Ok(()) => Material::Rsa { n, e },
                    Err(why) => Material::Unsupported(why),
                }
            }
            ALGO_EDDSA_LEGACY => {
                let oid_len = usize::from(take(&mut d, 1, "key packet")?[0]);
                let oid = take(&mut d, oid_len, "key packet")?;
                let point = mpi(&mut d)?;
                if oid != OID_ED25519 {
                    Material::Unsupported("its EdDSA curve is not Ed25519".into())
                } else if point.len() != 33 || point[0] != 0x40 {
                    return Err(short("Ed25519 public key"));
                } else {
                    let mut pk = [0u8; 32];
                    pk.copy_from_slice(&point[1..]);
                    Material::Ed25519(pk)
                }
            }
            ALGO_ED25519 => {
                let mut pk = [0u8; 32];
                pk.copy_from_slice(take(&mut d, 32, "Ed25519 public key")?);
                Material::Ed25519(pk)
            }
            other => Material::Unsupported(format!(
                "{} keys are not supported (RSA or Ed25519 are)",
                algo_name(other)
            )),
        };
        let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
        hash_key(&mut ctx, body);
        let mut fingerprint = [0u8; 20];
        fingerprint.copy_from_slice(ctx.finish().as_ref());
        Ok(KeyPacket {
            body: body.to_vec(),
            created,
            material,
            fingerprint,
        })
    }

    /// The upper-case hex fingerprint.
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    }

    fn key_id(&self) -> &[u8] {
        &self.fingerprint[12..]
    }

    fn unsupported(&self) -> Option<&str> {
        match &self.material {
            Material::Unsupported(why) => Some(why),
            _ => None,
        }
    }

    /// Verifies `sig` over `digest` (the finished hash of the signed data and the trailer).
    fn verify_digest(&self, sig: &Signature, digest: &[u8]) -> Result<(), String> {
        match (&self.material, &sig.material) {
            (Material::Rsa { n, e }, SigMaterial::Rsa(s)) => rsa::verify(n, e, digest, s),
            (Material::Ed25519(pk), SigMaterial::Ed25519(s)) => {
                ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, pk)
                    .verify(digest, s)
                    .map_err(|_| "the Ed25519 signature does not match".into())
            }
            (Material::Unsupported(why), _) => Err(why.clone()),
            (_, SigMaterial::Unsupported(a)) => Err(format!(
                "it is an {} signature, which is not supported",
                algo_name(*a)
            )),
            _ => Err("the signature's algorithm does not match the key's".into()),
        }
    }
}

/// Hashes a v4 key the way signatures and fingerprints cover it: 0x99, 2-byte length, body.
fn hash_key(ctx: &mut digest::Context, body: &[u8]) {
    ctx.update(&[0x99]);
    ctx.update(&(body.len() as u16).to_be_bytes());
    ctx.update(body);
}

// ---------------------------------------------------------------------------------------------
// Signatures (RFC 9580 §5.2)

/// Signature types used here.
pub const SIG_BINARY: u8 = 0x00;
pub const SIG_TEXT: u8 = 0x01;
const SIG_CERT_FIRST: u8 = 0x10;
const SIG_CERT_LAST: u8 = 0x13;
const SIG_SUBKEY_BINDING: u8 = 0x18;
const SIG_PRIMARY_BINDING: u8 = 0x19;
const SIG_DIRECT: u8 = 0x1f;
const SIG_KEY_REVOCATION: u8 = 0x20;
const SIG_SUBKEY_REVOCATION: u8 = 0x28;

#[derive(Debug, Clone)]
enum SigMaterial {
    Rsa(Vec<u8>),
    Ed25519([u8; 64]),
    Unsupported(u8),
}

/// A version 4 signature packet.
#[derive(Debug, Clone)]
pub struct Signature {
    /// Signature type (0x00 binary document, 0x01 text document, 0x10… key signatures).
    pub typ: u8,
    hash: u8,
    /// Version through the hashed subpackets: hashed after the signed data.
    hashed: Vec<u8>,
    created: Option<u32>,
    /// Seconds after `created` the signature stops being valid (0: never).
    validity: Option<u32>,
    /// Seconds after the key's creation it expires (0: never).
    key_validity: Option<u32>,
    key_flags: Option<u8>,
    issuer_fingerprints: Vec<Vec<u8>>,
    issuer_ids: Vec<Vec<u8>>,
    embedded: Option<Box<Signature>>,
    /// A critical subpacket this reader does not know: the signature must not be trusted.
    unknown_critical: Option<u8>,
    material: SigMaterial,
}

/// Subpacket types whose meaning is understood (or harmlessly ignorable) when marked critical.
const KNOWN_SUBPACKETS: &[u8] = &[
    2, 3, 4, 5, 7, 9, 11, 12, 16, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 39,
];

impl Signature {
    fn parse(body: &[u8]) -> Result<Signature, String> {
        Signature::parse_nested(body, false)
    }

    /// `embedded`: this is a signature inside another one's subpacket, which may not nest
    /// further (a chain of nested signatures would otherwise recurse as deep as the input).
    fn parse_nested(body: &[u8], embedded: bool) -> Result<Signature, String> {
        let mut d = body;
        let version = take(&mut d, 1, "signature packet")?[0];
        if version != 4 {
            return Err(format!(
                "version {version} signatures are not supported (only version 4, gpg's format)"
            ));
        }
        let head = take(&mut d, 3, "signature packet")?;
        let (typ, algo, hash) = (head[0], head[1], head[2]);
        let hashed_len = be_uint(take(&mut d, 2, "signature packet")?) as usize;
        let hashed_area = take(&mut d, hashed_len, "signature packet")?;
        let hashed = body[..6 + hashed_len].to_vec();
        let unhashed_len = be_uint(take(&mut d, 2, "signature packet")?) as usize;
        let unhashed_area = take(&mut d, unhashed_len, "signature packet")?;
        take(&mut d, 2, "signature packet")?; // the digest's first two bytes: a hint only
        let material = match algo {
            ALGO_RSA | ALGO_RSA_SIGN => SigMaterial::Rsa(mpi(&mut d)?.to_vec()),
            ALGO_EDDSA_LEGACY => {
                let r = mpi(&mut d)?;
                let s = mpi(&mut d)?;
                if r.len() > 32 || s.len() > 32 {
                    return Err(short("EdDSA signature"));
                }
                let mut sig = [0u8; 64];
                sig[32 - r.len()..32].copy_from_slice(r);
                sig[64 - s.len()..].copy_from_slice(s);
                SigMaterial::Ed25519(sig)
            }
            ALGO_ED25519 => {
                let mut sig = [0u8; 64];
                sig.copy_from_slice(take(&mut d, 64, "Ed25519 signature")?);
                SigMaterial::Ed25519(sig)
            }
            other => SigMaterial::Unsupported(other),
        };
        let mut sig = Signature {
            typ,
            hash,
            hashed,
            created: None,
            validity: None,
            key_validity: None,
            key_flags: None,
            issuer_fingerprints: Vec::new(),
            issuer_ids: Vec::new(),
            embedded: None,
            unknown_critical: None,
            material,
        };
        sig.subpackets(hashed_area, true, embedded)?;
        sig.subpackets(unhashed_area, false, embedded)?;
        Ok(sig)
    }

    fn subpackets(&mut self, mut area: &[u8], hashed: bool, nested: bool) -> Result<(), String> {
        while !area.is_empty() {
            let o1 = take(&mut area, 1, "subpacket")?[0];
            let len = match o1 {
                0..=191 => usize::from(o1),
                192..=254 => {
                    let o2 = take(&mut area, 1, "subpacket")?[0];
                    ((usize::from(o1) - 192) << 8) + usize::from(o2) + 192
                }
                255 => be_uint(take(&mut area, 4, "subpacket")?) as usize,
            };
            let sub = take(&mut area, len, "subpacket")?;
            let (&kind, data) = sub.split_first().ok_or_else(|| short("subpacket"))?;
            let critical = kind & 0x80 != 0;
            let kind = kind & 0x7f;
            if hashed && critical && !KNOWN_SUBPACKETS.contains(&kind) {
                self.unknown_critical = Some(kind);
            }
            let u32_of = |data: &[u8]| (data.len() == 4).then(|| be_uint(data));
            match kind {
                // Only the hashed area is covered by the signature: time, expiry and usage
                // come from it alone. Issuers are hints (the cryptography decides).
                2 if hashed => self.created = u32_of(data),
                3 if hashed => self.validity = u32_of(data),
                9 if hashed => self.key_validity = u32_of(data),
                27 if hashed => self.key_flags = data.first().copied(),
                16 if data.len() == 8 => self.issuer_ids.push(data.to_vec()),
                33 if data.len() == 21 && data[0] == 4 => {
                    self.issuer_fingerprints.push(data[1..].to_vec())
                }
                32 if !nested && self.embedded.is_none() => {
                    self.embedded = Signature::parse_nested(data, true).ok().map(Box::new)
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether `key` may have made this signature according to its issuer subpackets (a
    /// signature naming no issuer may be from any key).
    fn names_issuer(&self, key: &KeyPacket) -> bool {
        if self.issuer_fingerprints.is_empty() && self.issuer_ids.is_empty() {
            return true;
        }
        self.issuer_fingerprints
            .iter()
            .any(|f| f.as_slice() == key.fingerprint)
            || self
                .issuer_ids
                .iter()
                .any(|id| id.as_slice() == key.key_id())
    }

    /// What the signed data's digest depends on: the hash algorithm and the signature type
    /// (binary or text). Signatures alike in both hash the data alike.
    pub fn data_hashing(&self) -> (u8, u8) {
        (self.hash, self.typ)
    }

    /// The hash context for this signature, or why its hash is refused.
    pub fn hasher(&self) -> Result<digest::Context, String> {
        Ok(digest::Context::new(hash_algorithm(self.hash)?))
    }

    /// Finishes `ctx` (which has hashed the signed data) with the signature's trailer.
    fn finish(&self, mut ctx: digest::Context) -> digest::Digest {
        ctx.update(&self.hashed);
        ctx.update(&[4, 0xff]);
        ctx.update(&(self.hashed.len() as u32).to_be_bytes());
        ctx.finish()
    }

    /// Verifies this signature, made by `signer`, over what `feed` hashes.
    fn check(
        &self,
        signer: &KeyPacket,
        feed: impl FnOnce(&mut digest::Context),
    ) -> Result<(), String> {
        let mut ctx = self.hasher()?;
        feed(&mut ctx);
        self.verify_hashed(signer, ctx)
    }

    /// Verifies this signature, made by `signer`, over what `ctx` has hashed.
    fn verify_hashed(&self, signer: &KeyPacket, ctx: digest::Context) -> Result<(), String> {
        if let Some(kind) = self.unknown_critical {
            return Err(format!("it carries an unknown critical subpacket ({kind})"));
        }
        signer.verify_digest(self, self.finish(ctx).as_ref())
    }

    /// Seconds since the Unix epoch when this signature stops being valid, if it does.
    pub fn expires_at(&self) -> Option<u64> {
        match (self.created, self.validity) {
            (Some(c), Some(v)) if v > 0 => Some(u64::from(c) + u64::from(v)),
            _ => None,
        }
    }

    fn created(&self) -> u32 {
        self.created.unwrap_or(0)
    }
}

/// Parses a detached signature file (armored or binary): its signature packets, in order.
pub fn parse_signatures(bytes: &[u8]) -> Result<Vec<Signature>, String> {
    let (label, data) = dearmor(bytes)?;
    if let Some(l) = label.filter(|l| l != "SIGNATURE") {
        return Err(format!("the armor says {l:?}, not \"SIGNATURE\""));
    }
    let mut sigs = Vec::new();
    for p in packets(&data)? {
        match p.tag {
            TAG_SIGNATURE => sigs.push(Signature::parse(p.body)?),
            // One-pass signature and marker packets carry nothing to verify.
            4 | 10 => {}
            other => {
                return Err(format!(
                    "it holds a packet of type {other}, not only signatures"
                ));
            }
        }
    }
    if sigs.is_empty() {
        return Err("it holds no signature packet".into());
    }
    Ok(sigs)
}

/// Hashes signed data in chunks. Text signatures (type 0x01) hash the text as gpg does: every
/// line without its trailing CRs, LF-terminated lines then ending in CR LF (so LF and CR LF
/// files give the same digest; a CR inside a line is content).
#[derive(Clone)]
pub struct DataHasher {
    ctx: digest::Context,
    text: bool,
    /// CRs at the end of what was seen so far: hashed only if more of the line follows.
    pending_cr: u64,
}

impl DataHasher {
    pub fn new(sig: &Signature) -> Result<DataHasher, String> {
        Ok(DataHasher {
            ctx: sig.hasher()?,
            text: sig.typ == SIG_TEXT,
            pending_cr: 0,
        })
    }

    pub fn update(&mut self, mut chunk: &[u8]) {
        if !self.text {
            self.ctx.update(chunk);
            return;
        }
        loop {
            let (part, lf) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], true),
                None => (chunk, false),
            };
            let kept = part.iter().rposition(|&b| b != b'\r').map_or(0, |i| i + 1);
            if kept > 0 {
                self.flush_cr();
                self.ctx.update(&part[..kept]);
            }
            self.pending_cr += (part.len() - kept) as u64;
            if !lf {
                return;
            }
            self.pending_cr = 0;
            self.ctx.update(b"\r\n");
            chunk = &chunk[part.len() + 1..];
        }
    }

    fn flush_cr(&mut self) {
        const CRS: [u8; 64] = [b'\r'; 64];
        while self.pending_cr > 0 {
            let n = self.pending_cr.min(CRS.len() as u64);
            self.ctx.update(&CRS[..n as usize]);
            self.pending_cr -= n;
        }
    }

    /// Verifies `sig` (whose type this hasher was made for) over the hashed data with `key`.
    pub fn verify(self, sig: &Signature, key: &KeyPacket) -> Result<(), String> {
        sig.verify_hashed(key, self.ctx)
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates (transferable public keys, RFC 9580 §10.1)

/// A key that may make document signatures, and when it stops being valid.
#[derive(Debug, Clone)]
pub struct Signer {
    pub key: KeyPacket,
    pub expires_at: Option<u64>,
}

/// A public key with its self-signatures checked.
#[derive(Debug, Clone)]
pub struct Cert {
    pub primary: KeyPacket,
    /// Revoked by a valid revocation signature of its own.
    pub revoked: bool,
    /// When the primary key expires (Unix seconds), from its newest self-signature.
    pub expires_at: Option<u64>,
    /// Keys (primary and subkeys) that may sign documents.
    pub signers: Vec<Signer>,
    /// Keys that cannot sign here, with why (algorithm, missing back-signature, revoked…):
    /// named when a signature turns out to be theirs.
    pub unusable: Vec<(KeyPacket, String)>,
}

/// Why a key file was not accepted.
#[derive(Debug)]
pub enum CertError {
    /// Not (well-formed) OpenPGP public key data.
    Malformed(String),
    /// A secret key (which must never be published).
    Private,
    /// A well-formed key this reader cannot or must not use: why.
    Unusable(String),
}

enum Component {
    Primary,
    User,
    Subkey(usize),
    Ignored,
}

struct SubkeyEntry {
    key: KeyPacket,
    sigs: Vec<Signature>,
}

impl Cert {
    /// Parses one armored or binary public key and checks its self-signatures.
    pub fn parse(bytes: &[u8]) -> Result<Cert, CertError> {
        use CertError::{Malformed, Private, Unusable};
        let (label, data) = dearmor(bytes).map_err(Malformed)?;
        if let Some(l) = &label {
            if l.contains("PRIVATE") || l.contains("SECRET") {
                return Err(Private);
            }
            if l != "PUBLIC KEY BLOCK" {
                return Err(Malformed(format!(
                    "the armor says {l:?}, not \"PUBLIC KEY BLOCK\""
                )));
            }
        }
        let packets = packets(&data).map_err(Malformed)?;
        let mut iter = packets.iter();
        let primary = match iter.next() {
            Some(p) if p.tag == TAG_PUBLIC_KEY => KeyPacket::parse(p.body).map_err(Malformed)?,
            Some(p) if p.tag == TAG_SECRET_KEY || p.tag == TAG_SECRET_SUBKEY => {
                return Err(Private);
            }
            _ => {
                return Err(Malformed(
                    "it does not start with a public key packet".into(),
                ));
            }
        };
        if let Some(why) = primary.unsupported() {
            return Err(Unusable(why.to_string()));
        }
        let mut direct = Vec::new();
        let mut users: Vec<(Vec<u8>, Vec<Signature>)> = Vec::new();
        let mut subkeys: Vec<SubkeyEntry> = Vec::new();
        let mut at = Component::Primary;
        for p in iter {
            match p.tag {
                TAG_SIGNATURE => {
                    // A signature this reader cannot parse (another version, say) is ignored,
                    // as an invalid one would be.
                    let Ok(sig) = Signature::parse(p.body) else {
                        continue;
                    };
                    match &at {
                        Component::Primary => direct.push(sig),
                        Component::User => {
                            if let Some(u) = users.last_mut() {
                                u.1.push(sig);
                            }
                        }
                        Component::Subkey(i) => {
                            if let Some(s) = subkeys.get_mut(*i) {
                                s.sigs.push(sig);
                            }
                        }
                        Component::Ignored => {}
                    }
                }
                TAG_USER_ID | TAG_USER_ATTRIBUTE => {
                    let prefix = if p.tag == TAG_USER_ID { 0xb4 } else { 0xd1 };
                    let mut hashed = vec![prefix];
                    hashed.extend_from_slice(&(p.body.len() as u32).to_be_bytes());
                    hashed.extend_from_slice(p.body);
                    users.push((hashed, Vec::new()));
                    at = Component::User;
                }
                TAG_PUBLIC_SUBKEY => match KeyPacket::parse(p.body) {
                    Ok(key) => {
                        subkeys.push(SubkeyEntry {
                            key,
                            sigs: Vec::new(),
                        });
                        at = Component::Subkey(subkeys.len() - 1);
                    }
                    Err(_) => at = Component::Ignored,
                },
                TAG_PUBLIC_KEY => {
                    return Err(Malformed(
                        "it holds more than one public key; give one key per file".into(),
                    ));
                }
                TAG_SECRET_KEY | TAG_SECRET_SUBKEY => return Err(Private),
                // Trust, marker, padding and unknown packets carry nothing to check.
                _ => {}
            }
        }
        Cert::check(primary, direct, users, subkeys).map_err(Unusable)
    }

    /// The signing keys `sig` may be from (by its issuer subpackets).
    pub fn signers_for<'a>(&'a self, sig: &'a Signature) -> impl Iterator<Item = &'a Signer> + 'a {
        self.signers.iter().filter(|s| sig.names_issuer(&s.key))
    }

    /// The key of this certificate that `sig` names as its issuer when that key cannot sign
    /// here, with why.
    pub fn unusable_for(&self, sig: &Signature) -> Option<&(KeyPacket, String)> {
        if sig.issuer_fingerprints.is_empty() && sig.issuer_ids.is_empty() {
            return None;
        }
        self.unusable.iter().find(|(k, _)| sig.names_issuer(k))
    }

    fn check(
        primary: KeyPacket,
        direct: Vec<Signature>,
        users: Vec<(Vec<u8>, Vec<Signature>)>,
        subkeys: Vec<SubkeyEntry>,
    ) -> Result<Cert, String> {
        let by_primary = |s: &&Signature| s.names_issuer(&primary);
        // Each self-signature costs a public-key operation (an RSA-8192 one is milliseconds on
        // a small ARM core): a key stuffed with thousands of them is refused before any is
        // checked. Real keys carry a handful; third-party certifications are not checked and
        // do not count.
        let to_check = direct.iter().filter(by_primary).count()
            + users
                .iter()
                .map(|(_, sigs)| sigs.iter().filter(by_primary).count())
                .sum::<usize>()
            + subkeys
                .iter()
                .map(|sub| sub.sigs.iter().filter(by_primary).count())
                .sum::<usize>();
        if to_check > MAX_SELF_SIGNATURES {
            return Err(format!(
                "it carries {to_check} self-signatures; more than {MAX_SELF_SIGNATURES} are refused"
            ));
        }
        let mut errors = Vec::new();
        let mut valid: Vec<&Signature> = Vec::new();
        let mut revoked = false;
        // Revocations and direct-key signatures.
        for s in direct.iter().filter(by_primary) {
            match (s.typ, s.check(&primary, |c| hash_key(c, &primary.body))) {
                (SIG_KEY_REVOCATION, Ok(())) => revoked = true,
                (SIG_DIRECT, Ok(())) => valid.push(s),
                (_, Err(e)) => errors.push(e),
                _ => {}
            }
        }
        // Certifications of the user ids (and attributes) by the key itself.
        for (hashed, sigs) in &users {
            for s in sigs.iter().filter(by_primary) {
                if !(SIG_CERT_FIRST..=SIG_CERT_LAST).contains(&s.typ) {
                    continue;
                }
                let ok = s.check(&primary, |c| {
                    hash_key(c, &primary.body);
                    c.update(hashed);
                });
                match ok {
                    Ok(()) => valid.push(s),
                    Err(e) => errors.push(e),
                }
            }
        }
        let Some(self_sig) = valid.iter().copied().max_by_key(|s| s.created()) else {
            return Err(match errors.into_iter().next() {
                Some(e) => format!("its self-signatures do not verify ({e})"),
                None => "it has no self-signature".into(),
            });
        };
        let expires_at = key_expiry(&primary, self_sig);
        let mut signers = Vec::new();
        let mut unusable = Vec::new();
        let primary_signs = self_sig.key_flags.is_none_or(|f| f & 0x02 != 0);
        if primary_signs {
            signers.push(Signer {
                key: primary.clone(),
                expires_at,
            });
        } else {
            unusable.push((
                primary.clone(),
                "the primary key is not marked for signing".into(),
            ));
        }

        for sub in subkeys {
            let binds = |c: &mut digest::Context| {
                hash_key(c, &primary.body);
                hash_key(c, &sub.key.body);
            };
            let mut binding: Option<&Signature> = None;
            let mut sub_revoked = false;
            let mut why = None;
            for s in sub.sigs.iter().filter(by_primary) {
                let ok = s.check(&primary, binds);
                match (s.typ, ok) {
                    (SIG_SUBKEY_REVOCATION, Ok(())) => sub_revoked = true,
                    (SIG_SUBKEY_BINDING, Ok(()))
                        if binding.is_none_or(|b| s.created() >= b.created()) =>
                    {
                        binding = Some(s)
                    }
                    (_, Err(e)) => why = Some(e),
                    _ => {}
                }
            }
            let verdict = match binding {
                _ if sub_revoked => Err("the subkey is revoked".to_string()),
                None => Err(format!(
                    "the subkey has no valid binding signature{}",
                    why.map(|w| format!(" ({w})")).unwrap_or_default()
                )),
                Some(b) if b.key_flags.is_none_or(|f| f & 0x02 == 0) => {
                    Err("the subkey is not marked for signing".to_string())
                }
                Some(b) => match &b.embedded {
                    // A subkey is valid no longer than its primary key.
                    Some(back) if back.typ == SIG_PRIMARY_BINDING => back
                        .check(&sub.key, binds)
                        .map(|()| {
                            [key_expiry(&sub.key, b), expires_at]
                                .into_iter()
                                .flatten()
                                .min()
                        })
                        .map_err(|e| format!("its back-signature does not verify ({e})")),
                    _ => Err("the signing subkey has no back-signature".to_string()),
                },
            };
            match verdict {
                Ok(expires_at) => signers.push(Signer {
                    key: sub.key,
                    expires_at,
                }),
                Err(e) => unusable.push((sub.key, e)),
            }
        }
        Ok(Cert {
            primary,
            revoked,
            expires_at,
            signers,
            unusable,
        })
    }
}

fn key_expiry(key: &KeyPacket, sig: &Signature) -> Option<u64> {
    match sig.key_validity {
        Some(v) if v > 0 => Some(u64::from(key.created) + u64::from(v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &[u8] = include_bytes!("../../../tests/data/pgp/key-a.asc");
    const KEY_B: &[u8] = include_bytes!("../../../tests/data/pgp/key-b.asc");

    #[test]
    fn armor_is_checked_and_binary_passes_through() {
        let (label, bin) = dearmor(KEY_A).unwrap();
        assert_eq!(label.as_deref(), Some("PUBLIC KEY BLOCK"));
        assert_eq!(bin[0] & 0x80, 0x80);
        assert_eq!(dearmor(&bin).unwrap(), (None, bin.clone()));
        assert!(Cert::parse(&bin).is_ok());
        // A changed character of the body: the CRC (or base64) catches it.
        let text = String::from_utf8(KEY_A.to_vec()).unwrap();
        let at = text.find("\n\n").unwrap() + 10;
        let mut changed = text.clone().into_bytes();
        changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
        assert!(dearmor(&changed).is_err());
        let cut = &text[..text.find("-----END").unwrap()];
        assert!(dearmor(cut.as_bytes()).unwrap_err().contains("END PGP"));
        assert!(dearmor(b"   ").is_err());
        assert!(dearmor(b"<html>").is_err());
        assert_eq!(crc24(b""), 0x00b7_04ce);
    }

    /// The whole bytes (header and body) of each packet of `bin`.
    fn raw_packets(bin: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut start = 0;
        packets(bin)
            .unwrap()
            .iter()
            .map(|p| {
                let end = p.body.as_ptr() as usize - bin.as_ptr() as usize + p.body.len();
                let raw = bin[start..end].to_vec();
                start = end;
                (p.tag, raw)
            })
            .collect()
    }

    #[test]
    fn a_key_stuffed_with_self_signatures_is_refused_before_checking_them() {
        let (_, bin) = dearmor(KEY_A).unwrap();
        let raw = raw_packets(&bin);
        let sig_at = raw.iter().position(|(t, _)| *t == TAG_SIGNATURE).unwrap();
        let build = |copies: usize| {
            let mut out = Vec::new();
            for (i, (_, r)) in raw.iter().enumerate() {
                let n = if i == sig_at { copies } else { 1 };
                for _ in 0..n {
                    out.extend_from_slice(r);
                }
            }
            out
        };
        // 200 copies of the user id's self-signature: all valid, the key is usable.
        assert!(Cert::parse(&build(200)).is_ok());
        match Cert::parse(&build(300)) {
            Err(CertError::Unusable(m)) => assert!(m.contains("more than 256"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_keys_are_errors_not_panics() {
        let (_, bin) = dearmor(KEY_A).unwrap();
        // Two keys in one file.
        let (_, b) = dearmor(KEY_B).unwrap();
        let two = [bin.clone(), b].concat();
        assert!(
            matches!(Cert::parse(&two), Err(CertError::Malformed(m)) if m.contains("more than one"))
        );
        // Every truncation.
        for n in 0..bin.len() {
            let _ = Cert::parse(&bin[..n]);
        }
        // A partial-length header.
        assert!(
            packets(&[0xc6, 0xe1, 0, 0])
                .unwrap_err()
                .contains("partial")
        );
        // A length beyond the input.
        assert!(packets(&[0xc6, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        // A secret key packet.
        assert!(matches!(
            Cert::parse(&[0x94, 0x01, 0x04]),
            Err(CertError::Private)
        ));
    }

    #[test]
    fn a_key_whose_only_self_signature_is_corrupt_is_unusable() {
        let (_, mut bin) = dearmor(KEY_A).unwrap();
        // Flip a bit of the user id's self-signature (its EdDSA s value, at the packet's end).
        let ps = packets(&bin).unwrap();
        let sig = ps.iter().find(|p| p.tag == TAG_SIGNATURE).unwrap();
        let uid_end = sig.body.as_ptr() as usize - bin.as_ptr() as usize + sig.body.len();
        bin[uid_end - 5] ^= 0x40;
        match Cert::parse(&bin) {
            Err(CertError::Unusable(m)) => {
                assert!(m.contains("self-signatures do not verify"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
}
