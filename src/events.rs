//! Events on the in-loop bus: what happened (`code`) and who said it (`source`).

use std::collections::VecDeque;
use std::fmt;

/// Event codes of ContainerPilot 3. The `Display` form is the internal name used
/// in logs and in the `containerpilot_events{code}` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventCode {
    None,
    Startup,
    Shutdown,
    ExitSuccess,
    ExitFailed,
    Error,
    Stopping,
    Stopped,
    StatusHealthy,
    StatusUnhealthy,
    StatusChanged,
    TimerExpired,
    EnterMaintenance,
    ExitMaintenance,
    Signal,
    Metric,
    Quit,
}

impl EventCode {
    /// The name accepted in `when.once` / `when.each` (case-sensitive, as 3.8).
    pub fn from_config_name(s: &str) -> Option<EventCode> {
        if s.is_empty() {
            return None;
        }
        CONFIG_CODES.into_iter().find(|c| c.config_name() == s)
    }

    /// The `when.once`/`when.each` name (`healthy`, `exitSuccess`, ...); empty
    /// for codes no config can name.
    pub fn config_name(self) -> &'static str {
        match self {
            EventCode::Startup => "startup",
            EventCode::Shutdown => "shutdown",
            EventCode::ExitSuccess => "exitSuccess",
            EventCode::ExitFailed => "exitFailed",
            EventCode::Error => "error",
            EventCode::Stopping => "stopping",
            EventCode::Stopped => "stopped",
            EventCode::StatusHealthy => "healthy",
            EventCode::StatusUnhealthy => "unhealthy",
            EventCode::StatusChanged => "changed",
            EventCode::TimerExpired => "timerExpired",
            EventCode::EnterMaintenance => "enterMaintenance",
            EventCode::ExitMaintenance => "exitMaintenance",
            EventCode::None | EventCode::Signal | EventCode::Metric | EventCode::Quit => "",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EventCode::None => "None",
            EventCode::Startup => "Startup",
            EventCode::Shutdown => "Shutdown",
            EventCode::ExitSuccess => "ExitSuccess",
            EventCode::ExitFailed => "ExitFailed",
            EventCode::Error => "Error",
            EventCode::Stopping => "Stopping",
            EventCode::Stopped => "Stopped",
            EventCode::StatusHealthy => "StatusHealthy",
            EventCode::StatusUnhealthy => "StatusUnhealthy",
            EventCode::StatusChanged => "StatusChanged",
            EventCode::TimerExpired => "TimerExpired",
            EventCode::EnterMaintenance => "EnterMaintenance",
            EventCode::ExitMaintenance => "ExitMaintenance",
            EventCode::Signal => "Signal",
            EventCode::Metric => "Metric",
            EventCode::Quit => "Quit",
        }
    }
}

impl fmt::Display for EventCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub const GLOBAL: &str = "global";

/// The codes a config can name in `once`/`each`.
const CONFIG_CODES: [EventCode; 13] = [
    EventCode::Startup,
    EventCode::Shutdown,
    EventCode::ExitSuccess,
    EventCode::ExitFailed,
    EventCode::Error,
    EventCode::Stopping,
    EventCode::Stopped,
    EventCode::StatusHealthy,
    EventCode::StatusUnhealthy,
    EventCode::StatusChanged,
    EventCode::TimerExpired,
    EventCode::EnterMaintenance,
    EventCode::ExitMaintenance,
];

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    pub code: EventCode,
    pub source: String,
}

impl Event {
    pub fn new(code: EventCode, source: impl Into<String>) -> Event {
        Event {
            code,
            source: source.into(),
        }
    }

    pub fn global(code: EventCode) -> Event {
        Event::new(code, GLOBAL)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{} {}}}", self.code, self.source)
    }
}

/// The bus is a FIFO drained by the loop: every subscriber sees every event in
/// publish order, and publishing never blocks (unlike 3.8's bounded mailboxes).
#[derive(Default, Debug)]
pub struct Bus {
    queue: VecDeque<Event>,
}

impl Bus {
    pub fn publish(&mut self, ev: Event) {
        self.queue.push_back(ev);
    }

    pub fn pop(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
