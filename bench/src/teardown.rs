//! A stack of undo actions, run in reverse order when dropped: on success, on error (`?`), on
//! panic (unwinding) and after Ctrl-C (the signal only sets a flag; the run unwinds normally).

/// Undo actions, last registered first run.
#[derive(Default)]
pub struct Teardown {
    steps: Vec<(String, Box<dyn FnOnce() + Send>)>,
}

impl std::fmt::Debug for Teardown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.steps.iter().map(|s| &s.0)).finish()
    }
}

impl Teardown {
    /// Registers `undo`, described by `what` (for debugging).
    pub fn push(&mut self, what: impl Into<String>, undo: impl FnOnce() + Send + 'static) {
        self.steps.push((what.into(), Box::new(undo)));
    }

    /// Runs every action now, newest first.
    pub fn run(&mut self) {
        while let Some((_, f)) = self.steps.pop() {
            f();
        }
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        self.run();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn runs_in_reverse_once() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut t = Teardown::default();
            for i in 0..3 {
                let l = log.clone();
                t.push(format!("step {i}"), move || l.lock().unwrap_or_else(|e| e.into_inner()).push(i));
            }
        }
        assert_eq!(*log.lock().unwrap_or_else(|e| e.into_inner()), vec![2, 1, 0]);
    }
}
