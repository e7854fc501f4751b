//! Where the audit stream lives: the one place its publisher (the query API) and its consumers
//! (the projector's analytics, `query-api audit tail`) agree on names. The message itself is
//! the query API's to define (`query_api::audit::AuditEvent`); consumers read the fields they
//! need and tolerate outcomes they do not know.

/// The JetStream stream of audit messages (created by whichever query API starts first).
pub const STREAM: &str = "MUSIC_AUDIT";
/// The subjects the stream takes.
pub const STREAM_SUBJECTS: &str = "music.audit.>";
/// The subject of resolve attempts and media fetches.
pub const SUBJECT: &str = "music.audit.share.resolve";
