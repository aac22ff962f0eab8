//! Integration tests: a real hub on port 0, real HTTP clients.

#![allow(clippy::unwrap_used)]

mod auth;
mod cli;
mod delivery;
mod fixture;
mod limits;
mod ops;
mod publish;
mod resume;
mod shutdown;
