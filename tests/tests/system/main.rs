//! The whole system: the event store's guarantees, every process's lifecycle, faults an
//! operator meets, several query instances as one (shared limits, a replicated audit stream),
//! `scripts/stack` from a fresh clone, what an operator observes, both OpenAPI documents against
//! the running APIs, and the harness's own helpers. One test binary for everything that is not one process's.

#[path = "../query_fixture/mod.rs"]
mod query_fixture;

mod analytics;
// The schemathesis run takes minutes: named to sort early, since libtest starts tests in name
// order, so that it runs beside the others instead of after them.
mod api_schemathesis;
mod event_store;
mod faults;
mod harness;
mod hostile_clients;
mod observability;
mod processes;
mod scale_out;
mod stack_script;
