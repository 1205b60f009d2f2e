//! Tollgate's durable workflow engine.
//!
//! A request becomes a *run* of the workflow version that governed it when it was made. The run
//! moves by pure transitions ([`transition`]) that return the new state, audit events and
//! effects; the single writer ([`store`]) commits all three in one transaction, by
//! compare-and-set on the run's version. Effects that leave the process — connector calls and
//! notifications — are outbox rows performed after commit, at least once, with an idempotency
//! key that is the same on every attempt. Timers are rows with a due time.
//!
//! Invariants:
//! - a state change and its audit record commit together, or neither does;
//! - a grant call happens only after an approval step was satisfied by eligible approvers who
//!   are not the requester, counted once each;
//! - a crash at any point loses no committed decision and repeats no committed transition; a
//!   side effect may be repeated, always with the same idempotency key;
//! - a grant is shown revoked only after its revoke call succeeded;
//! - a run keeps the workflow version it started with.

#![deny(missing_docs)]

pub mod audit;
pub mod clock;
pub mod connector;
pub mod context;
pub mod delivery;
pub mod directory;
pub mod effect;
pub mod feature;
pub mod http;
pub mod ids;
pub mod notify;
pub mod run;
pub mod runtime;
pub mod signing;
pub mod slack;
pub mod store;
pub mod transition;

pub use context::Shared;
pub use feature::{config_sync, links};
pub use runtime::{Created, Engine, EngineSettings};
pub use store::writer::JobError;
