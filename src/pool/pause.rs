//! Why a pool's checkouts are held: a small set of independent reasons, each set and lifted
//! only by its owner. A pool hands out servers only while no reason is set, so an admin
//! `RESUME` (which lifts [`PauseReasons::ADMIN`]) can never release a shutdown drain or a
//! failover hold.
//!
//! [`PauseBook`] remembers the reasons the admin console and shutdown set per database and for
//! every database, so a pool created later starts with them. It is the only copy: the pools get
//! theirs from it, and nothing else keeps one.

use dashmap::DashMap;
use parking_lot::Mutex;

/// A set of pause reasons (a bitset; cheap to copy and compare).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PauseReasons(u8);

impl PauseReasons {
    /// No reason: checkouts proceed.
    pub const NONE: PauseReasons = PauseReasons(0);
    /// Console `PAUSE` / `KILL` (with or without a database); lifted by `RESUME`.
    pub const ADMIN: PauseReasons = PauseReasons(1);
    /// `SHUTDOWN WAIT_FOR_SERVERS` / SIGINT: never lifted (the process is exiting).
    pub const SHUTDOWN: PauseReasons = PauseReasons(2);
    /// A failover hold: set and lifted by the pool set when its primary is in doubt.
    pub const FAILOVER_HOLD: PauseReasons = PauseReasons(4);
    /// The reasons [`PauseBook`] owns (the pool set owns the rest).
    pub const BOOKED: PauseReasons = PauseReasons(1 | 2);

    /// True when no reason is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every reason of `other` is set.
    pub fn contains(self, other: PauseReasons) -> bool {
        self.0 & other.0 == other.0
    }

    /// Adds the reasons of `other`.
    pub fn insert(&mut self, other: PauseReasons) {
        self.0 |= other.0;
    }

    /// Removes the reasons of `other`.
    pub fn remove(&mut self, other: PauseReasons) {
        self.0 &= !other.0;
    }

    /// This set with `other`'s reasons added.
    pub fn union(self, other: PauseReasons) -> PauseReasons {
        PauseReasons(self.0 | other.0)
    }

    /// Every reason not in this set.
    pub fn complement(self) -> PauseReasons {
        PauseReasons(!self.0)
    }

    /// This set restricted to `mask`.
    pub fn intersect(self, mask: PauseReasons) -> PauseReasons {
        PauseReasons(self.0 & mask.0)
    }
}

/// The pause reasons set for every database and per database (admin console and shutdown).
#[derive(Debug, Default)]
pub struct PauseBook {
    /// Reasons that apply to every pool, present and future (PAUSE, KILL, SIGINT drain).
    all: Mutex<PauseReasons>,
    /// Reasons that apply to the pools of one database (PAUSE db, KILL db).
    dbs: DashMap<String, PauseReasons>,
}

impl PauseBook {
    /// Adds `reason` for `db` (or for every database).
    pub fn insert(&self, db: Option<&str>, reason: PauseReasons) {
        match db {
            Some(db) => self.dbs.entry(db.to_string()).or_default().insert(reason),
            None => self.all.lock().insert(reason),
        }
    }

    /// Lifts `reason` for `db` (or the every-database one; a per-database reason stays).
    pub fn remove(&self, db: Option<&str>, reason: PauseReasons) {
        match db {
            Some(db) => {
                self.dbs.remove_if_mut(db, |_, r| {
                    r.remove(reason);
                    r.is_empty()
                });
            }
            None => self.all.lock().remove(reason),
        }
    }

    /// The reasons set for every database.
    pub fn all(&self) -> PauseReasons {
        *self.all.lock()
    }

    /// The reasons set for `db` itself (not counting the every-database ones).
    pub fn of_db(&self, db: &str) -> PauseReasons {
        self.dbs.get(db).map(|r| *r).unwrap_or_default()
    }

    /// The reasons that apply to a pool of `db`.
    pub fn effective(&self, db: &str) -> PauseReasons {
        self.all().union(self.of_db(db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_independent() {
        let mut r = PauseReasons::NONE;
        r.insert(PauseReasons::ADMIN);
        r.insert(PauseReasons::FAILOVER_HOLD);
        r.remove(PauseReasons::ADMIN);
        assert!(!r.is_empty());
        assert!(r.contains(PauseReasons::FAILOVER_HOLD));
        assert!(!r.contains(PauseReasons::ADMIN));
        assert!(r.intersect(PauseReasons::BOOKED).is_empty());
    }

    #[test]
    fn book_keeps_all_and_per_db_apart() {
        let b = PauseBook::default();
        b.insert(None, PauseReasons::ADMIN);
        b.insert(Some("a"), PauseReasons::ADMIN);
        assert_eq!(b.effective("b"), PauseReasons::ADMIN);
        b.remove(None, PauseReasons::ADMIN);
        assert!(b.effective("b").is_empty());
        // A plain RESUME leaves `PAUSE a` in force.
        assert_eq!(b.effective("a"), PauseReasons::ADMIN);
        b.remove(Some("a"), PauseReasons::ADMIN);
        assert!(b.effective("a").is_empty());
        assert!(b.dbs.is_empty());
    }
}
