//! The controller's enable and shutdown state machine (NVMe Base 2.0, 3.6: controller
//! initialization, reset and shutdown), driven by the host's writes of CC through Property Set
//! and by the completion of the shutdown flush.
//!
//! ```text
//!                 Enable (valid CC)              Shutdown (SHN 0 -> 1/2)
//!   +----------+ ------------------> +---------+ ----------------------> +-----------------+
//!   | Disabled |                     | Enabled |        (flush the      | ShutdownPending |
//!   +----------+ <------------------ +---------+         namespaces)    +-----------------+
//!     ^  |  ^      Disable (EN 1->0)                                             | FlushDone
//!     |  |  +--------------------------------------------------+                v
//!     |  | Enable (bad CC: IOSQES, IOCQES, CSS or MPS)         +-------- +-------------------+
//!     |  v                                                       Disable | ShutdownComplete  |
//!   +--------+                                                           +-------------------+
//!   | Failed |  (CSTS.CFS: only a reset, EN 1->0, leaves it)
//!   +--------+
//! ```
//!
//! CSTS is derived from the state, never stored beside it. Invariant: a shutdown always ends in
//! ShutdownComplete (after the flush, when there was anything to flush), and Disable from any
//! state is a controller reset.

/// Where a controller is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// CC.EN = 0 (after Connect, or after a reset): CSTS.RDY = 0.
    Disabled,
    /// CC.EN = 1 accepted: CSTS.RDY = 1; I/O queues may connect.
    Enabled,
    /// Shutdown notified: the namespaces are being flushed; CSTS.SHST = occurring.
    ShutdownPending,
    /// Shutdown done: CSTS.SHST = complete.
    ShutdownComplete,
    /// CC.EN = 1 with values the controller does not support: CSTS.CFS = 1.
    Failed,
}

/// What the host (or the flush) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// CC.EN went 0 -> 1; `valid` says whether CC's other fields are supported.
    Enable { valid: bool },
    /// CC.EN went 1 -> 0: a controller reset.
    Disable,
    /// CC.SHN went from 0 to normal or abrupt.
    Shutdown,
    /// The shutdown's flush completed.
    FlushDone,
}

/// What the controller must do on a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// Flush every namespace, then deliver [`Event::FlushDone`].
    Flush,
}

const CSTS_RDY: u32 = 1 << 0;
const CSTS_CFS: u32 = 1 << 1;
const CSTS_SHST_OCCURRING: u32 = 0b01 << 2;
const CSTS_SHST_COMPLETE: u32 = 0b10 << 2;

impl State {
    /// The checked transition function: the new state and what to do, or `None` for an event
    /// that does not apply in this state (ignored by the caller: a host may write CC with
    /// nothing changed).
    pub fn on(self, event: Event) -> Option<(State, Action)> {
        use {Action as A, Event as E, State as S};
        Some(match (self, event) {
            (_, E::Disable) => (S::Disabled, A::None),
            (S::Disabled, E::Enable { valid: true }) => (S::Enabled, A::None),
            (S::Disabled, E::Enable { valid: false }) => (S::Failed, A::None),
            (S::Enabled, E::Shutdown) => (S::ShutdownPending, A::Flush),
            // Nothing was enabled, so nothing is buffered: the shutdown is complete at once.
            (S::Disabled | S::Failed, E::Shutdown) => (S::ShutdownComplete, A::None),
            (S::ShutdownPending, E::FlushDone) => (S::ShutdownComplete, A::None),
            _ => return None,
        })
    }

    /// CSTS as the host reads it.
    pub fn csts(self) -> u32 {
        match self {
            State::Disabled => 0,
            State::Enabled => CSTS_RDY,
            State::ShutdownPending => CSTS_RDY | CSTS_SHST_OCCURRING,
            State::ShutdownComplete => CSTS_RDY | CSTS_SHST_COMPLETE,
            State::Failed => CSTS_CFS,
        }
    }

    /// Whether I/O queues may connect.
    pub fn is_ready(self) -> bool {
        self == State::Enabled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [State; 5] =
        [State::Disabled, State::Enabled, State::ShutdownPending, State::ShutdownComplete, State::Failed];
    const EVENTS: [Event; 5] = [
        Event::Enable { valid: true },
        Event::Enable { valid: false },
        Event::Disable,
        Event::Shutdown,
        Event::FlushDone,
    ];

    /// The whole table, written out: every state against every event.
    #[test]
    fn transition_table() {
        use {Action as A, Event as E, State as S};
        let expected = |s: State, e: Event| -> Option<(State, Action)> {
            match (s, e) {
                (_, E::Disable) => Some((S::Disabled, A::None)),
                (S::Disabled, E::Enable { valid: true }) => Some((S::Enabled, A::None)),
                (S::Disabled, E::Enable { valid: false }) => Some((S::Failed, A::None)),
                (S::Disabled, E::Shutdown) => Some((S::ShutdownComplete, A::None)),
                (S::Disabled, E::FlushDone) => None,
                (S::Enabled, E::Enable { .. }) => None,
                (S::Enabled, E::Shutdown) => Some((S::ShutdownPending, A::Flush)),
                (S::Enabled, E::FlushDone) => None,
                (S::ShutdownPending, E::Enable { .. } | E::Shutdown) => None,
                (S::ShutdownPending, E::FlushDone) => Some((S::ShutdownComplete, A::None)),
                (S::ShutdownComplete, E::Enable { .. } | E::Shutdown | E::FlushDone) => None,
                (S::Failed, E::Enable { .. } | E::FlushDone) => None,
                (S::Failed, E::Shutdown) => Some((S::ShutdownComplete, A::None)),
            }
        };
        for s in STATES {
            for e in EVENTS {
                assert_eq!(s.on(e), expected(s, e), "{s:?} on {e:?}");
            }
        }
    }

    #[test]
    fn csts_follows_the_state() {
        assert_eq!(State::Disabled.csts(), 0);
        assert_eq!(State::Enabled.csts(), 0b0001);
        assert_eq!(State::ShutdownPending.csts(), 0b0101);
        assert_eq!(State::ShutdownComplete.csts(), 0b1001);
        assert_eq!(State::Failed.csts(), 0b0010);
        assert!(STATES.iter().filter(|s| s.is_ready()).eq([&State::Enabled]));
    }

    /// From every state, every sequence of up to four events keeps the invariants: a flush is
    /// asked only on the way into ShutdownPending, and Disable always resets.
    #[test]
    fn sequences_keep_the_invariants() {
        fn walk(s: State, depth: usize) {
            if depth == 0 {
                return;
            }
            for e in EVENTS {
                let Some((next, action)) = s.on(e) else { continue };
                assert_eq!(action == Action::Flush, next == State::ShutdownPending && s != State::ShutdownPending);
                if e == Event::Disable {
                    assert_eq!(next, State::Disabled);
                }
                walk(next, depth - 1);
            }
        }
        for s in STATES {
            walk(s, 4);
        }
    }
}
