//! The key of the pool registry, and its borrowed form: a login looks its pool up by the
//! `&str`s it already holds, and allocates the owned key only when it creates the pool.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// Identifies a pool: the database name clients use and the user the server sees.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PoolKey {
    /// Database name as in `[databases]`.
    pub db: String,
    /// Server-side user (the forced user, or the client's user).
    pub user: String,
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.db, self.user)
    }
}

/// A pool key's two names, owned ([`PoolKey`]) or borrowed ([`KeyRef`]), so a map of
/// `PoolKey`s can be searched with `&dyn KeyView` (hash and equality agree for both).
pub trait KeyView {
    fn db(&self) -> &str;
    fn user(&self) -> &str;
}

/// A pool key made of borrowed names, for lookups.
pub struct KeyRef<'a> {
    pub db: &'a str,
    pub user: &'a str,
}

impl KeyView for PoolKey {
    fn db(&self) -> &str {
        &self.db
    }
    fn user(&self) -> &str {
        &self.user
    }
}

impl KeyView for KeyRef<'_> {
    fn db(&self) -> &str {
        self.db
    }
    fn user(&self) -> &str {
        self.user
    }
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.db().hash(state);
        self.user().hash(state);
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.db() == other.db() && self.user() == other.user()
    }
}

impl Eq for dyn KeyView + '_ {}

// Hashing through the view keeps an owned key and its borrowed form in the same bucket.
impl Hash for PoolKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn KeyView).hash(state);
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for PoolKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dashmap::DashMap;

    #[test]
    fn a_borrowed_key_finds_the_owned_one() {
        let map = DashMap::new();
        let key = PoolKey {
            db: "app".into(),
            user: "alice".into(),
        };
        map.insert(key, 7);
        let found = |db, user| map.get(&KeyRef { db, user } as &dyn KeyView).map(|v| *v);
        assert_eq!(found("app", "alice"), Some(7));
        assert_eq!(found("app", "bob"), None);
        // The split between the names counts: "ap"+"palice" is another key.
        assert_eq!(found("ap", "palice"), None);
    }
}
