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
//!
//! # Layers
//!
//! Each layer uses only the layers below it; adapters are reached only through the outbox
//! dispatcher, and see core values, never the store.
//!
//! ```text
//!              runtime
//!             ╱       ╲
//!      features       adapters ──► outbound, http, signing
//!         │              │
//!       store            │
//!             ╲       ╱
//!               core
//! ```
//!
//! - **core** — [`ids`], [`clock`], [`run`], [`directory`], [`audit`], [`action`], [`message`],
//!   [`effect`], [`transition`], [`policy`], [`token`], [`delivery`], [`context`], [`health`]: values and pure rules, no
//!   database or network, time only through [`clock::Clock`], new ids only from an
//!   [`ids::IdSource`] the caller seeds (a transition is a pure function of state, command and
//!   context). Effects carry plain values ([`action::ConnectorAction`],
//!   [`message::Notification`]), so nothing here knows an adapter.
//! - **store** — [`store`]: entities, reads, and the writer: a generic executor that commits
//!   batches of jobs, each job's state, audit records and effects together.
//! - **features** — [`feature`]: each part of the state (runs, outbox, timers, approval
//!   [`links`], tasks, tokens, [`config_sync`], Slack messages, audit events) defines the writer
//!   jobs that change it.
//! - **runtime** — [`runtime`]: the [`Engine`] façade; starts the writer, the timer service and
//!   the outbox dispatcher, which performs effects through the adapters.
//! - **adapters** — [`connector`], [`notify`], [`slack`], sharing [`outbound`] (retryable or
//!   permanent errors, timeouts, secrets, signed webhooks), [`http`] (the outbound client) and
//!   [`signing`] (webhook signatures).

#![deny(missing_docs)]

// Core: values and pure rules.
pub mod action;
pub mod audit;
pub mod clock;
pub mod context;
pub mod credential;
pub mod delivery;
pub mod directory;
pub mod effect;
pub mod health;
pub mod ids;
pub mod message;
pub mod policy;
pub mod run;
pub mod schedule;
pub mod sealed;
pub mod token;
pub mod transition;

// Store: entities, reads, the single writer.
pub mod store;

// Features: the writer jobs of each part of the state, built on the store.
pub mod feature;

// Runtime: the engine façade.
pub mod runtime;

// Adapters, behind the outbox dispatcher, and the plumbing they share.
pub mod connector;
pub mod http;
pub mod notify;
pub mod outbound;
pub mod signing;
pub mod slack;

pub use context::Shared;
pub use feature::{config_sync, links};
pub use runtime::{Created, Engine, EngineSettings};
pub use store::writer::JobError;
