//! End-to-end tests: the real `tollgate` binary against a fresh database (SQLite, or PostgreSQL
//! with `TOLLGATE_TEST_DATABASE_URL`) and a scripted, signature-checking webhook receiver.
//! One module per area.

mod access;
mod approvals;
mod audit_tamper;
mod bad_input;
mod break_glass;
mod cli;
mod common;
mod crash;
mod credentials;
mod durations;
mod email;
mod github_app;
mod grants;
mod lifecycle;
mod load;
mod logs;
mod notifications;
mod oauth2;
mod openapi;
mod paging;
mod references;
mod refusals;
mod reload;
mod reload_cli;
mod replicas;
mod revocation;
mod rotation;
mod secrets;
mod slack;
mod strict_bodies;
mod tasks;
mod tokens;
mod walkthrough;
mod workflow_files;
mod workflows;
