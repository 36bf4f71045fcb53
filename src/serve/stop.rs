//! Stop strings, matched on the generated text. Text that could still be the start of a stop
//! string is held back until the next tokens decide, so a stop string is never sent, even in
//! part.

pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> StopMatcher {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Add generated text; returns the text now safe to send. After a stop string is found,
    /// everything from it on is dropped and [`Self::stopped`] is true.
    pub fn push(&mut self, text: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(text);
        let first_stop = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min();
        if let Some(at) = first_stop {
            self.stopped = true;
            self.held.truncate(at);
            return std::mem::take(&mut self.held);
        }
        let keep = self.partial_suffix_len();
        let out = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        out
    }

    /// End of generation: what was held back (it never completed a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Bytes at the end of `held` that are a proper prefix of some stop string (the longest).
    fn partial_suffix_len(&self) -> usize {
        let h = &self.held;
        h.char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.len() > h.len() - i && s.starts_with(&h[i..])))
            .map_or(0, |i| h.len() - i)
    }
}

#[cfg(test)]
mod tests {
    use super::StopMatcher;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            out += &m.push(p);
        }
        if !m.stopped() {
            out += &m.finish();
        }
        (out, m.stopped())
    }

    #[test]
    fn stop_split_over_tokens_is_never_sent() {
        assert_eq!(run(&["END"], &["Hello E", "N", "D more"]), ("Hello ".into(), true));
    }

    #[test]
    fn held_text_is_released_when_it_cannot_be_a_stop() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("one E"), "one ");
        assert_eq!(m.push("x"), "Ex");
        assert!(!m.stopped());
    }

    #[test]
    fn earliest_of_several_stops_wins_and_unicode_is_safe() {
        assert_eq!(run(&["\n\n", "é!"], &["ça é", "! then\n\n"]), ("ça ".into(), true));
        assert_eq!(run(&["zz"], &["naïve ", "é"]), ("naïve é".into(), false));
    }

    #[test]
    fn held_prefix_is_flushed_at_the_end() {
        assert_eq!(run(&["STOP"], &["a ST"]), ("a ST".into(), false));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }
}
