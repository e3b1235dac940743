//! What the size collectors (`relation_sizes`, `database`) keep between
//! runs: each object's last size reading, by the change key the server
//! computes for it, and the run that read it.
//!
//! A run sends the keys it may reuse (`known`, a `text[]` parameter); the
//! server calls the size function only for the rows whose current key is
//! not among them, and the run reports the reading kept for the others.
//! Each run leaves the oldest [`REREAD_EVERY`]th of the readings out of
//! `known`, so that every size is read again within that many runs whatever
//! the keys missed. On a standby (replay moves no statistics counter) and
//! with `track_counts = off` the server reuses nothing.

use std::collections::HashMap;

use super::CollectError;

/// Every size is read again at least once in this many runs, its key
/// changed or not.
pub const REREAD_EVERY: usize = 12;

/// The `known` CTE: the keys of parameter `$param` that the server may
/// reuse (none on a standby or without `track_counts`).
pub fn known(param: usize) -> String {
    format!(
        "known AS MATERIALIZED (SELECT key FROM unnest(${param}::text[]) AS key \
         WHERE NOT pg_is_in_recovery() AND current_setting('track_counts')::bool)"
    )
}

/// An object's sizes as last read, and the run that read them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    sizes: (f64, f64),
    run: u64,
}

/// One database's readings, by change key.
#[derive(Debug, Default)]
pub struct Readings {
    run: u64,
    by_key: HashMap<String, Reading>,
}

impl Readings {
    /// The keys whose sizes the next run may reuse: all but the oldest
    /// `1/REREAD_EVERY` of the readings (rounded up), which it reads again.
    pub fn reusable(&self) -> Vec<&str> {
        let mut by_age: Vec<(u64, &str)> = self.by_key.iter().map(|(k, r)| (r.run, k.as_str())).collect();
        by_age.sort_unstable();
        let reread = self.by_key.len().div_ceil(REREAD_EVERY);
        by_age.into_iter().skip(reread).map(|(_, k)| k).collect()
    }

    /// The next run's readings, empty.
    pub fn next(&self) -> Readings {
        Readings {
            run: self.run + 1,
            by_key: HashMap::with_capacity(self.by_key.len()),
        }
    }

    /// The sizes read for `key` before, now carried into `next` (`None` if
    /// this run has none: the server reused a key it was not sent).
    pub fn carry(&self, next: &mut Readings, key: String) -> Option<(f64, f64)> {
        let reading = *self.by_key.get(&key)?;
        next.by_key.insert(key, reading);
        Some(reading.sizes)
    }

    /// A row's sizes, put into `next`: the reading kept for `key` if the
    /// server `reused` it, else what `read` gives now. `None` only for a
    /// reused key this run has no reading for (it sends only keys it has).
    pub fn sizes(
        &self,
        next: &mut Readings,
        key: String,
        reused: bool,
        read: impl FnOnce() -> Result<(f64, f64), CollectError>,
    ) -> Result<Option<(f64, f64)>, CollectError> {
        if reused {
            return Ok(self.carry(next, key));
        }
        let sizes = read()?;
        next.record(key, sizes);
        Ok(Some(sizes))
    }

    /// Sizes read by this run.
    pub fn record(&mut self, key: String, sizes: (f64, f64)) {
        let run = self.run;
        self.by_key.insert(key, Reading { sizes, run });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reading_is_read_again_within_reread_every_runs() {
        let mut last = Readings::default();
        for i in 0..25 {
            last.record(format!("t:{i}"), (i as f64, 0.0));
        }
        let mut read_in: HashMap<String, u64> = last.by_key.keys().map(|k| (k.clone(), 0)).collect();
        for run in 1..=40u64 {
            let known: Vec<String> = last.reusable().into_iter().map(str::to_string).collect();
            // 25 readings: 3 are read again each run, the oldest first.
            assert_eq!(known.len(), 22, "run {run}");
            let mut next = last.next();
            for k in read_in.keys() {
                if known.contains(k) {
                    assert!(last.carry(&mut next, k.clone()).is_some(), "{k}");
                } else {
                    next.record(k.clone(), (0.0, 0.0));
                }
            }
            for k in read_in.keys().cloned().collect::<Vec<_>>() {
                if !known.contains(&k) {
                    read_in.insert(k, run);
                }
            }
            for (k, at) in &read_in {
                assert!(run - at < REREAD_EVERY as u64, "{k} last read in run {at}, now {run}");
            }
            last = next;
        }
        assert!(Readings::default().reusable().is_empty());
        // A reused key gives the kept reading; another is read and kept.
        let mut next = last.next();
        let kept = last.sizes(&mut next, "t:3".into(), true, || panic!("read")).unwrap();
        assert_eq!(kept, Some((0.0, 0.0)));
        let read = last.sizes(&mut next, "t:new".into(), false, || Ok((7.0, 1.0))).unwrap();
        assert_eq!(read, Some((7.0, 1.0)));
        assert_eq!(next.by_key.len(), 2);
        assert_eq!(
            last.sizes(&mut next, "t:gone".into(), true, || panic!("read")).unwrap(),
            None
        );
        assert_eq!(Readings::default().carry(&mut Readings::default(), "x".into()), None);
    }
}
