//! Typed identifiers: UUIDv7 newtypes so a run id can never be passed where a grant id is due.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The ids one transition creates, derived from a seed the caller passes in: a transition is a
/// pure function of (state, command, context), so it may not draw randomness itself. The same
/// seed gives the same ids in the same order; the runtime seeds each transition afresh
/// ([`IdSource::random`]), tests with a fixed seed.
///
/// Ids stay time-ordered (UUIDv7: the timestamp is the transition's `now`), so they index like
/// the ids made elsewhere.
#[derive(Debug)]
pub struct IdSource {
    seed: [u8; 10],
    next: AtomicU32,
}

impl IdSource {
    /// Ids from `seed`.
    #[must_use]
    pub fn seeded(seed: Uuid) -> Self {
        let mut bytes = [0; 10];
        bytes.copy_from_slice(&seed.as_bytes()[6..]);
        Self { seed: bytes, next: AtomicU32::new(0) }
    }

    /// Ids from a random seed (122 random bits, as a v4 UUID has).
    #[must_use]
    pub fn random() -> Self {
        Self::seeded(Uuid::new_v4())
    }

    /// The next id, stamped with `now`.
    pub fn next<T: From<Uuid>>(&self, now: DateTime<Utc>) -> T {
        let n = self.next.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        let mut bytes = self.seed;
        for (b, c) in bytes[6..].iter_mut().zip(n) {
            *b ^= c;
        }
        let millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        T::from(uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid())
    }
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered (v7) id.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

id_type!(
    /// A request, i.e. one run of a workflow.
    RunId
);
id_type!(
    /// A grant of access.
    GrantId
);
id_type!(
    /// An outbox item (a side effect to perform).
    OutboxId
);
id_type!(
    /// A durable timer.
    TimerId
);
id_type!(
    /// A manual task for an operator.
    TaskId
);
