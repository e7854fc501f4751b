//! The whole system: the event store's guarantees, every process's lifecycle, faults an
//! operator meets, several query instances as one (shared limits, a replicated audit stream),
//! `scripts/stack` from a fresh clone, what an operator observes, both OpenAPI documents against
//! the running APIs, and the harness's own helpers. One test binary for everything that is not one process's.

mod event_store;
mod faults;
mod harness;
mod hostile_clients;
mod observability;
mod openapi_schemathesis;
mod processes;
mod scale_out;
mod stack_script;
