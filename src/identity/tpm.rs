//! Feature `tpm`: the device key created and used inside a TPM 2.0.
//!
//! The key is a primary ECDSA P-256 signing key of the owner hierarchy, created with a fixed
//! template: the TPM derives it from its owner seed, so the same key comes back on every start
//! (until the TPM is cleared) without a persistent handle, and its private part never leaves
//! the TPM. The body's SHA-256 is computed by the agent; the TPM signs that digest
//! (`TPM2_Sign`, ECDSA with SHA-256), and the (r, s) pair is encoded as ASN.1 DER, so the
//! `X-Payload-Signature` is the same as with a key file.

use std::cell::RefCell;
use std::str::FromStr;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::{Digest, EccScheme, HashScheme, Public, Signature, SignatureScheme};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::{Context, TctiNameConf};

pub struct TpmKey {
    ctx: RefCell<Context>,
    handle: KeyHandle,
}

/// Left-pads a big-endian coordinate to 32 bytes.
fn pad32(v: &[u8]) -> Result<[u8; 32], String> {
    let v = &v[v
        .len()
        .saturating_sub(32)
        .min(v.iter().take_while(|b| **b == 0).count())..];
    if v.len() > 32 {
        return Err("TPM returned a coordinate longer than 32 bytes".into());
    }
    let mut out = [0u8; 32];
    out[32 - v.len()..].copy_from_slice(v);
    Ok(out)
}

impl TpmKey {
    /// Opens the TPM through `tcti` (`device:/dev/tpmrm0`, `swtpm:host=…,port=…`) and
    /// creates (derives) the device key; returns it with its uncompressed public point.
    pub fn open(tcti: &str) -> Result<(TpmKey, Vec<u8>), String> {
        let conf = TctiNameConf::from_str(tcti).map_err(|e| format!("TCTI {tcti:?}: {e}"))?;
        let mut ctx =
            Context::new(conf).map_err(|e| format!("cannot open the TPM at {tcti}: {e}"))?;
        let public = tss_esapi::utils::create_unrestricted_signing_ecc_public(
            EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
            EccCurve::NistP256,
        )
        .map_err(|e| format!("TPM key template: {e}"))?;
        let created = ctx
            .execute_with_nullauth_session(|c| {
                c.create_primary(Hierarchy::Owner, public, None, None, None, None)
            })
            .map_err(|e| format!("TPM at {tcti}: cannot create the device key: {e}"))?;
        let Public::Ecc { unique, .. } = &created.out_public else {
            return Err("TPM returned a non-ECC key".into());
        };
        let mut point = vec![0x04];
        point.extend_from_slice(&pad32(unique.x().value())?);
        point.extend_from_slice(&pad32(unique.y().value())?);
        Ok((
            TpmKey {
                ctx: RefCell::new(ctx),
                handle: created.key_handle,
            },
            point,
        ))
    }

    /// ECDSA P-256 signature over SHA-256(`body`), DER.
    pub fn sign(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(body);
        let digest = Digest::try_from(hash.to_vec()).map_err(|e| e.to_string())?;
        let validation = TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        }
        .try_into()
        .map_err(|e: tss_esapi::Error| e.to_string())?;
        let mut ctx = self.ctx.borrow_mut();
        let sig = ctx
            .execute_with_nullauth_session(|c| {
                c.sign(self.handle, digest, SignatureScheme::Null, validation)
            })
            .map_err(|e: tss_esapi::Error| format!("TPM signing failed: {e}"))?;
        let Signature::EcDsa(s) = sig else {
            return Err("TPM returned a non-ECDSA signature".into());
        };
        Ok(der_signature(
            s.signature_r().value(),
            s.signature_s().value(),
        ))
    }
}

/// `SEQUENCE { INTEGER r, INTEGER s }` from big-endian r and s.
pub fn der_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn int(v: &[u8]) -> Vec<u8> {
        let v = &v[v
            .iter()
            .take_while(|b| **b == 0)
            .count()
            .min(v.len().saturating_sub(1))..];
        let mut out = vec![0x02];
        let pad = v.first().is_some_and(|b| b & 0x80 != 0);
        out.push((v.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
        out
    }
    let (r, s) = (int(r), int(s));
    let mut out = vec![0x30, (r.len() + s.len()) as u8];
    out.extend(r);
    out.extend(s);
    out
}
