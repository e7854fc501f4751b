//! The whole system: the event store's guarantees, every process's lifecycle, faults an
//! operator meets, what an operator observes, both OpenAPI documents against the running APIs,
//! and the harness's own helpers. One test binary for everything that is not one process's.

#[path = "../query_fixture/mod.rs"]
mod query_fixture;

mod analytics;
mod event_store;
mod faults;
mod harness;
mod observability;
mod openapi_schemathesis;
mod processes;
