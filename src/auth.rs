//! Who is asking and what they may do. Passwords are hashed with argon2; API tokens are
//! random, shown once, and stored as SHA-256 hashes. Every decision path (pages, API, Slack)
//! asks [`authorize`] the same question.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand_core::RngCore;
use sha2::{Digest, Sha256};

use crate::domain::Role;

/// What an action needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// See proposals, the audit log and the canvas.
    Read,
    /// Approve, reject, roll back.
    Decide,
    /// Manage people and guardrails.
    Administer,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {role} may not {what}")]
pub struct Forbidden {
    pub role: Role,
    pub what: &'static str,
}

/// The one place that says which role may do what.
pub fn authorize(role: Role, permission: Permission) -> Result<(), Forbidden> {
    let allowed = match permission {
        Permission::Read => true,
        Permission::Decide => matches!(role, Role::Admin | Role::Approver),
        Permission::Administer => role == Role::Admin,
    };
    if allowed {
        Ok(())
    } else {
        Err(Forbidden {
            role,
            what: match permission {
                Permission::Read => "read",
                Permission::Decide => "decide on proposals",
                Permission::Administer => "manage people or guardrails",
            },
        })
    }
}

/// A person who proved who they are.
#[derive(Clone, Debug, PartialEq)]
pub struct Actor {
    pub email: String,
    pub role: Role,
}

impl Actor {
    pub fn may(&self, permission: Permission) -> Result<(), Forbidden> {
        authorize(self.role, permission)
    }
}

pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

fn random(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buffer);
    URL_SAFE_NO_PAD.encode(buffer)
}

/// A password for someone added without one: shown once.
pub fn generate_password() -> String {
    random(18)
}

/// A new API token: its id (hex, so `eo_{id}_` can be split off), the token to show
/// once, and the hash to store.
pub fn new_token() -> (String, String, String) {
    let mut id_bytes = [0u8; 6];
    OsRng.fill_bytes(&mut id_bytes);
    let id = hex::encode(id_bytes);
    let token = format!("eo_{id}_{}", random(32));
    let hash = token_hash(&token);
    (id, token, hash)
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_boundary_is_where_it_should_be() {
        let table = [
            (Role::Viewer, Permission::Read, true),
            (Role::Viewer, Permission::Decide, false),
            (Role::Viewer, Permission::Administer, false),
            (Role::Approver, Permission::Read, true),
            (Role::Approver, Permission::Decide, true),
            (Role::Approver, Permission::Administer, false),
            (Role::Admin, Permission::Read, true),
            (Role::Admin, Permission::Decide, true),
            (Role::Admin, Permission::Administer, true),
        ];
        for (role, permission, allowed) in table {
            assert_eq!(
                authorize(role, permission).is_ok(),
                allowed,
                "{role} {permission:?}"
            );
        }
    }

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse").unwrap_or_default();
        assert!(hash.starts_with("$argon2"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_are_unique_and_stored_only_as_hashes() {
        let (id1, token1, hash1) = new_token();
        let (id2, token2, _) = new_token();
        assert_ne!(id1, id2);
        assert_ne!(token1, token2);
        assert!(token1.starts_with(&format!("eo_{id1}_")));
        assert_eq!(hash1, token_hash(&token1));
        assert!(!hash1.contains(&token1));
    }
}
