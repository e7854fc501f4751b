//! Plumbing every music-share process shares, so the three services behave alike from outside.
//!
//! This crate owns the error envelope of the source pages ([`ApiError`]), request ids and their
//! propagation, JSON extraction that answers in that envelope, API-key authentication
//! ([`auth`]), connecting to NATS ([`nats`]), logs and metrics ([`telemetry`]), serving with
//! health checks and graceful shutdown ([`server`]), connections no client can hold
//! ([`connection`], [`http_limits`]), and what both OpenAPI documents share ([`openapi`]). It
//! must not hold
//! product logic: no routes of its own beyond health, metrics and `/openapi.json`, no knowledge
//! of tracks, shares or read models.

pub mod auth;
pub mod config;
pub mod connection;
pub mod dev_secret;
pub mod error;
pub mod http_limits;
pub mod json;
pub mod nats;
pub mod openapi;
pub mod request_id;
pub mod server;
pub mod telemetry;

pub use error::ApiError;
pub use request_id::current_request_id;
