//! The pipeline's queue of expected replies: the first few entries inline, the rest in a
//! `VecDeque`. A link's pipeline lives for one transaction, and a plain `VecDeque` allocated on
//! its first push, so every transaction paid a malloc and a free for a queue that holds one
//! entry (a simple Query) to five (Parse, Bind, Describe, Execute, Sync). Pipelines deeper than
//! [`INLINE`] entries still work: the rest spills over into the heap, in order.

use std::collections::VecDeque;

/// Entries kept inline: pgbench's and the drivers' usual requests fit.
pub(super) const INLINE: usize = 8;

/// A FIFO queue: logically `ring[head..head + len]` (wrapping) followed by `spill`.
pub(super) struct Queue<T> {
    /// The oldest entries, `len` of them from `head` on, wrapping; the other slots are `None`.
    ring: [Option<T>; INLINE],
    head: usize,
    len: usize,
    /// Entries after the inline ones; only used once the ring is full, so that order holds:
    /// nothing goes into the ring while anything is here.
    spill: VecDeque<T>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            ring: std::array::from_fn(|_| None),
            head: 0,
            len: 0,
            spill: VecDeque::new(),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T> Queue<T> {
    fn slot(&self, i: usize) -> usize {
        (self.head + i) % INLINE
    }

    pub(super) fn len(&self) -> usize {
        self.len + self.spill.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0 && self.spill.is_empty()
    }

    pub(super) fn push_back(&mut self, v: T) {
        if self.len < INLINE && self.spill.is_empty() {
            let at = self.slot(self.len);
            self.ring[at] = Some(v);
            self.len += 1;
        } else {
            self.spill.push_back(v);
        }
    }

    pub(super) fn front(&self) -> Option<&T> {
        self.get(0)
    }

    pub(super) fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return self.spill.pop_front();
        }
        let v = self.ring[self.head].take();
        self.head = self.slot(1);
        self.len -= 1;
        if self.len == 0 {
            self.head = 0;
        }
        v
    }

    pub(super) fn get(&self, i: usize) -> Option<&T> {
        if i < self.len {
            self.ring[self.slot(i)].as_ref()
        } else {
            self.spill.get(i - self.len)
        }
    }

    /// Removes the entry at `i`, keeping the order of the others.
    pub(super) fn remove(&mut self, i: usize) -> Option<T> {
        if i >= self.len {
            return self.spill.remove(i - self.len);
        }
        let v = self.ring[self.slot(i)].take();
        for j in i..self.len - 1 {
            let (from, to) = (self.slot(j + 1), self.slot(j));
            self.ring[to] = self.ring[from].take();
        }
        self.len -= 1;
        // The ring was full if anything spilled: its first spilled entry moves in behind.
        if let Some(next) = self.spill.pop_front() {
            let at = self.slot(self.len);
            self.ring[at] = Some(next);
            self.len += 1;
        }
        v
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        (0..self.len)
            .filter_map(|i| self.ring[self.slot(i)].as_ref())
            .chain(self.spill.iter())
    }
}

impl<T> std::ops::Index<usize> for Queue<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        self.get(i).expect("invariant: index within the queue")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue against a `VecDeque` under the same mixed operations, across the spill-over.
    #[test]
    fn behaves_as_a_vecdeque() {
        let mut q = Queue::default();
        let mut model = VecDeque::new();
        let mut next = 0u32;
        let mut deepest = 0;
        // A fixed pseudo-random walk: phases that grow (well past INLINE) and phases that drain.
        let mut seed = 0x2545_f491_u32;
        for step in 0..4000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let grow = (step / 500) % 2 == 0;
            let r = seed % 10;
            if r < 6 && (grow || model.len() < 3) {
                q.push_back(next);
                model.push_back(next);
                next += 1;
            } else if r < 8 {
                assert_eq!(q.pop_front(), model.pop_front());
            } else if !model.is_empty() {
                let i = (seed as usize / 10) % model.len();
                assert_eq!(q.remove(i), model.remove(i));
            }
            deepest = deepest.max(model.len());
            assert_eq!(q.len(), model.len());
            assert_eq!(q.is_empty(), model.is_empty());
            assert_eq!(q.front(), model.front());
            assert!(q.iter().eq(model.iter()), "step {step}");
            for (i, v) in model.iter().enumerate() {
                assert_eq!(&q[i], v);
            }
        }
        assert!(deepest > 2 * INLINE, "the walk spilled over: {deepest}");
    }

    #[test]
    fn a_short_request_stays_inline() {
        let mut q = Queue::default();
        for v in 0..INLINE {
            q.push_back(v);
        }
        assert_eq!(q.spill.capacity(), 0, "no allocation up to INLINE entries");
        q.push_back(INLINE);
        assert_eq!(q.len(), INLINE + 1);
        assert_eq!(q.pop_front(), Some(0));
        assert_eq!(q.remove(INLINE - 1), Some(INLINE));
        assert!(q.iter().copied().eq(1..INLINE));
    }
}
