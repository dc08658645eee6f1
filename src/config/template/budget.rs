//! What one render may cost. The limits protect PID 1 from a config (or a
//! reloaded one) that would otherwise exhaust its memory or its time:
//! builtins reserve the bytes of a result before building it, lists are
//! counted before they are made, and every evaluation step is counted.

/// Nesting of controls and parentheses; keeps recursion far from the stack limit.
pub const MAX_DEPTH: usize = 100;
/// Longest list a builtin may build (`loop`, `split`, `slice`).
pub const MAX_ELEMS: usize = 100_000;
/// Total `range` iterations per render.
pub const MAX_ITERATIONS: u64 = 1_000_000;
/// Total evaluation steps (actions, commands, function calls) per render.
pub const MAX_STEPS: u64 = 10_000_000;
/// Largest rendered output, and largest string any one builtin may return.
pub const MAX_STRING: usize = 16 << 20;
/// All bytes the builtins of one render may build together.
pub const MAX_ALLOC: usize = 64 << 20;
/// Largest template a render job may read.
pub const RENDER_MAX_SOURCE: usize = 64 << 10;

/// What one render may cost: the config file renders with [`Limits::CONFIG`],
/// once at start-up and on reload; a render job runs inside the loop, on
/// every change of what it watches, so [`Limits::RENDER`] keeps each render
/// within a few milliseconds and its output small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest rendered output, and largest string any one builtin may return.
    pub output: usize,
    /// All bytes the builtins of one render may build together.
    pub alloc: usize,
    /// Evaluation steps (actions, commands, function calls).
    pub steps: u64,
    /// `range` iterations.
    pub iterations: u64,
}

impl Limits {
    pub const CONFIG: Limits = Limits {
        output: MAX_STRING,
        alloc: MAX_ALLOC,
        steps: MAX_STEPS,
        iterations: MAX_ITERATIONS,
    };
    pub const RENDER: Limits = Limits {
        output: 1 << 20,
        alloc: 8 << 20,
        steps: 200_000,
        iterations: 100_000,
    };
}

/// Go's fmt refuses widths and precisions above this.
pub(super) const MAX_WIDTH: usize = 1_000_000;
/// What one list element costs besides its text (value + allocation header).
pub(super) const ELEM_COST: usize = 48;

pub(super) struct Budget {
    limits: Limits,
    bytes: usize,
    steps: u64,
    iterations: u64,
}

impl Budget {
    pub(super) fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            bytes: limits.alloc,
            steps: limits.steps,
            iterations: limits.iterations,
        }
    }

    pub(super) fn limits(&self) -> Limits {
        self.limits
    }

    /// Reserves `bytes` for a value about to be built.
    pub(super) fn reserve(&mut self, bytes: usize) -> Result<(), String> {
        if bytes > self.room() {
            return Err(self.over());
        }
        self.bytes -= bytes;
        Ok(())
    }

    /// Reserves a list of `n` elements with `text` bytes of strings in them.
    pub(super) fn reserve_list(&mut self, n: usize, text: usize) -> Result<(), String> {
        self.reserve(n.saturating_mul(ELEM_COST).saturating_add(text))
    }

    /// The most one value may still take.
    pub(super) fn room(&self) -> usize {
        self.bytes.min(self.limits.output)
    }

    /// Why a value did not fit in [`Budget::room`].
    pub(super) fn over(&self) -> String {
        if self.bytes < self.limits.output {
            let all = self.limits.alloc;
            format!("the values this template builds exceed {all} bytes")
        } else {
            format!("result exceeds {} bytes", self.limits.output)
        }
    }

    /// A buffer for a value built piece by piece; see [`Budget::charge`].
    pub(super) fn sink(&self) -> Sink {
        Sink::new(self.room())
    }

    /// Charges what a sink built.
    pub(super) fn charge(&mut self, sink: Sink) -> String {
        self.bytes = self.bytes.saturating_sub(sink.buf.len());
        sink.buf
    }

    pub(super) fn step(&mut self) -> Result<(), String> {
        self.steps = self
            .steps
            .checked_sub(1)
            .ok_or_else(|| format!("more than {} evaluation steps", self.limits.steps))?;
        Ok(())
    }

    pub(super) fn iteration(&mut self) -> Result<(), String> {
        self.iterations = self
            .iterations
            .checked_sub(1)
            .ok_or_else(|| format!("more than {} range iterations", self.limits.iterations))?;
        Ok(())
    }
}

/// A list of `n` elements may be built (`what` names the builtin).
pub(super) fn check_elems(what: &str, n: usize) -> Result<(), String> {
    if n > MAX_ELEMS {
        return Err(format!(
            "{what}: {n} elements is more than the limit of {MAX_ELEMS}"
        ));
    }
    Ok(())
}

/// The text did not fit in its sink.
#[derive(Debug)]
pub(super) struct Overflow;

/// A string buffer that never grows past its limit: each piece is checked
/// before it is copied, and capacity never exceeds the limit.
pub(super) struct Sink {
    buf: String,
    limit: usize,
}

impl Sink {
    pub(super) fn new(limit: usize) -> Sink {
        Sink {
            buf: String::new(),
            limit,
        }
    }

    /// Room left before the limit.
    pub(super) fn room(&self) -> usize {
        self.limit - self.buf.len()
    }

    pub(super) fn push(&mut self, s: &str) -> Result<(), Overflow> {
        if s.len() > self.room() {
            return Err(Overflow);
        }
        let need = self.buf.len() + s.len();
        if need > self.buf.capacity() {
            let target = self
                .buf
                .capacity()
                .saturating_mul(2)
                .max(need)
                .min(self.limit);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.push_str(s);
        Ok(())
    }

    pub(super) fn push_char(&mut self, c: char) -> Result<(), Overflow> {
        self.push(c.encode_utf8(&mut [0; 4]))
    }

    pub(super) fn into_string(self) -> String {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_never_grows_past_its_limit() {
        let mut s = Sink::new(10);
        assert!(s.push("12345").is_ok());
        assert!(s.push("123456").is_err());
        assert!(s.push("12345").is_ok());
        assert!(s.push_char('x').is_err());
        assert!(s.buf.capacity() <= 10);
        assert_eq!(s.into_string(), "1234512345");
    }

    #[test]
    fn budget_runs_out() {
        let mut b = Budget::new(Limits::CONFIG);
        assert_eq!(
            b.reserve(MAX_STRING + 1),
            Err(format!("result exceeds {MAX_STRING} bytes"))
        );
        for _ in 0..MAX_ALLOC / MAX_STRING {
            assert!(b.reserve(MAX_STRING).is_ok());
        }
        assert_eq!(
            b.reserve(1),
            Err(format!(
                "the values this template builds exceed {MAX_ALLOC} bytes"
            ))
        );
        assert!(check_elems("split", MAX_ELEMS).is_ok());
        assert!(check_elems("split", MAX_ELEMS + 1).is_err());
    }
}
