//! The KurrentDB (EventStoreDB) backend. Placeholder until the backend lands.
