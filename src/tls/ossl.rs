//! Two things the `openssl` crate does not expose, both for start-up time and memory with 100k
//! certificates (BENCHMARKS.md, "Start-up"):
//! - OpenSSL's own allocations on mimalloc (the binary's allocator) instead of glibc malloc: parsing a
//!   certificate is mostly small allocations; measured 25% faster and 1 KB less RSS per certificate;
//! - a PKCS#8 private key decoded by the one decoder for its key type. `PKey::private_key_from_pem`
//!   asks OpenSSL 3 to try every decoder it has, which costs more than the key itself.

use foreign_types::ForeignType;
use openssl::pkey::{PKey, Private};
use std::ffi::{c_char, c_int, c_void, CStr};

extern "C" {
    // In libcrypto (OpenSSL >= 1.1), not declared by openssl-sys.
    fn CRYPTO_set_mem_functions(
        malloc: extern "C" fn(usize, *const c_char, c_int) -> *mut c_void,
        realloc: extern "C" fn(*mut c_void, usize, *const c_char, c_int) -> *mut c_void,
        free: extern "C" fn(*mut c_void, *const c_char, c_int),
    ) -> c_int;
}

extern "C" fn mi_malloc(n: usize, _: *const c_char, _: c_int) -> *mut c_void {
    // SAFETY: mi_malloc has no preconditions.
    unsafe { libmimalloc_sys::mi_malloc(n) }
}

extern "C" fn mi_realloc(p: *mut c_void, n: usize, _: *const c_char, _: c_int) -> *mut c_void {
    // SAFETY: OpenSSL passes null or a pointer it got from these functions (they are installed before
    // its first allocation, or not at all).
    unsafe { libmimalloc_sys::mi_realloc(p, n) }
}

extern "C" fn mi_free(p: *mut c_void, _: *const c_char, _: c_int) {
    // SAFETY: as for mi_realloc.
    unsafe { libmimalloc_sys::mi_free(p) }
}

/// Route OpenSSL's allocations to mimalloc. Must run before OpenSSL allocates anything (first thing
/// in `main`); OpenSSL refuses, and this returns false, once it has.
pub fn allocate_with_mimalloc() -> bool {
    // SAFETY: the three functions have the signatures OpenSSL expects and stay valid for the whole
    // process; OpenSSL only accepts them before its first allocation.
    unsafe { CRYPTO_set_mem_functions(mi_malloc, mi_realloc, mi_free) == 1 }
}

const EC_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const RSA_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

/// The key type named by a PKCS#8 `PrivateKeyInfo`'s algorithm identifier, which comes within the
/// first bytes (after the outer header and the version).
fn pkcs8_key_type(der: &[u8]) -> Option<&'static CStr> {
    let head = &der[..der.len().min(32)];
    let has = |oid: &[u8]| head.windows(oid.len()).any(|w| w == oid);
    if has(EC_OID) {
        Some(c"EC")
    } else if has(RSA_OID) {
        Some(c"RSA")
    } else {
        None
    }
}

/// A PKCS#8 DER private key (EC or RSA) through the single decoder for its type. `None` when the type
/// is another or the bytes do not decode: the caller then takes OpenSSL's general path, which also
/// words the error.
pub fn private_key_from_pkcs8(der: &[u8]) -> Option<PKey<Private>> {
    let key_type = pkcs8_key_type(der)?;
    let mut pkey: *mut openssl_sys::EVP_PKEY = std::ptr::null_mut();
    // SAFETY: the strings are NUL-terminated constants; `pkey` outlives the context, which is freed
    // before return; on success OpenSSL hands us one reference to a new EVP_PKEY, owned by the PKey.
    unsafe {
        let ctx = openssl_sys::OSSL_DECODER_CTX_new_for_pkey(
            &mut pkey,
            c"DER".as_ptr(),
            c"PrivateKeyInfo".as_ptr(),
            key_type.as_ptr(),
            openssl_sys::EVP_PKEY_KEYPAIR,
            std::ptr::null_mut(),
            std::ptr::null(),
        );
        if ctx.is_null() {
            return None;
        }
        let mut data = der.as_ptr();
        let mut len = der.len();
        let ok = openssl_sys::OSSL_DECODER_from_data(ctx, &mut data, &mut len);
        openssl_sys::OSSL_DECODER_CTX_free(ctx);
        // A failed decode leaves errors on the thread's queue; the general path starts clean.
        let _ = openssl::error::ErrorStack::get();
        (ok == 1 && !pkey.is_null()).then(|| PKey::from_ptr(pkey))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::rsa::Rsa;

    #[test]
    fn pkcs8_keys_decode_like_the_general_path() {
        let ec = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap();
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        for key in [ec, rsa] {
            let der = key.private_key_to_pkcs8().unwrap();
            let fast = private_key_from_pkcs8(&der).expect("decodes");
            let general = PKey::private_key_from_der(&der).unwrap();
            assert_eq!(fast.id(), general.id());
            assert!(fast.public_eq(&general));
            assert_eq!(
                fast.private_key_to_pkcs8().unwrap(),
                general.private_key_to_pkcs8().unwrap()
            );
        }
    }

    #[test]
    fn other_types_and_garbage_are_left_to_the_general_path() {
        let ed = PKey::generate_ed25519().unwrap();
        assert!(private_key_from_pkcs8(&ed.private_key_to_pkcs8().unwrap()).is_none());
        assert!(private_key_from_pkcs8(b"").is_none());
        let mut der = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap()
        .private_key_to_pkcs8()
        .unwrap();
        der.truncate(der.len() - 10);
        assert!(private_key_from_pkcs8(&der).is_none());
        assert!(
            openssl::error::ErrorStack::get().errors().is_empty(),
            "no error left behind"
        );
    }
}
