//! [`Swap`]: a value that a configuration reload replaces while the tasks
//! that read it keep running. A reader takes the current value (an `Arc`
//! clone under a read lock held for nanoseconds) at the start of each piece
//! of work, so the work sees one value throughout, and the next sees the new
//! one.

use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct Swap<T>(RwLock<Arc<T>>);

impl<T> Swap<T> {
    pub fn new(value: Arc<T>) -> Self {
        Swap(RwLock::new(value))
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the value; returns the old one.
    pub fn set(&self, value: Arc<T>) -> Arc<T> {
        std::mem::replace(&mut *self.0.write().unwrap_or_else(|p| p.into_inner()), value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_the_value_they_took() {
        let s = Swap::new(Arc::new(1));
        let taken = s.get();
        assert_eq!(*s.set(Arc::new(2)), 1);
        assert_eq!((*taken, *s.get()), (1, 2));
    }
}
