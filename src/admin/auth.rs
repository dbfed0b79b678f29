//! The admin bearer token: from `EDGEWARD_ADMIN_TOKEN`, else `admin.token_file`, else a new random token
//! written to that file (0600). Compared in constant time; never logged.

use std::fmt;
use std::path::Path;
use subtle::ConstantTimeEq;

pub const TOKEN_ENV: &str = "EDGEWARD_ADMIN_TOKEN";

#[derive(Clone)]
pub struct AdminToken(String);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    pub fn new(token: impl Into<String>) -> Self {
        AdminToken(token.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Does this `Authorization` header value carry the token?
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(v) = authorization else { return false };
        let Some(given) = v.strip_prefix(b"Bearer ") else {
            return false;
        };
        bool::from(given.trim_ascii().ct_eq(self.0.as_bytes()))
    }
}

/// Resolve the token as described above; `created` tells whether a new file was written.
pub fn resolve(token_file: Option<&Path>) -> Result<(AdminToken, bool), String> {
    if let Ok(t) = std::env::var(TOKEN_ENV) {
        if !t.trim().is_empty() {
            return Ok((AdminToken(t.trim().to_string()), false));
        }
    }
    let path = token_file
        .ok_or_else(|| format!("no admin token: set {TOKEN_ENV} or edgeward.admin.token_file"))?;
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().is_empty() => {
            Err(format!("{}: admin token file is empty", path.display()))
        }
        Ok(t) => Ok((AdminToken(t.trim().to_string()), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            openssl::rand::rand_bytes(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
            let token = hex::encode(bytes);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            crate::store::write_secret(path, token.as_bytes()).map_err(|e| e.to_string())?;
            Ok((AdminToken(token), true))
        }
        Err(e) => Err(format!("{}: cannot read admin token: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_check() {
        let t = AdminToken::new("s3cret");
        assert!(t.accepts(Some(b"Bearer s3cret")));
        assert!(!t.accepts(Some(b"Bearer s3cre")));
        assert!(!t.accepts(Some(b"Basic s3cret")));
        assert!(!t.accepts(None));
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
