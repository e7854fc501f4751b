//! Upcasting: old payloads are upgraded, one schema version at a time, before typed decoding.
//!
//! The log is immutable, so a schema change never rewrites stored events. Instead each change
//! adds one step here, from version N to N+1, and every reader sees the current shape.

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::event::{DecodeError, MusicEvent};

/// Upgrades `payload` from `schema_version` to the current version of `event_type`.
pub(crate) fn to_current(
    event_id: Uuid,
    event_type: &str,
    schema_version: i32,
    payload: &Value,
) -> Result<Value, DecodeError> {
    let Some(current) = MusicEvent::current_schema_version(event_type) else {
        return Err(DecodeError::UnknownType {
            event_id,
            event_type: event_type.to_owned(),
        });
    };
    if schema_version < 1 || schema_version > current {
        return Err(DecodeError::UnsupportedVersion {
            event_id,
            event_type: event_type.to_owned(),
            schema_version,
        });
    }
    let Value::Object(fields) = payload else {
        return Err(DecodeError::Malformed {
            event_id,
            event_type: event_type.to_owned(),
            reason: "payload is not a JSON object".to_owned(),
        });
    };
    let mut fields = fields.clone();
    let mut version = schema_version;
    while version < current {
        fields = step(event_type, version, fields).map_err(|reason| DecodeError::Malformed {
            event_id,
            event_type: event_type.to_owned(),
            reason,
        })?;
        version += 1;
    }
    Ok(Value::Object(fields))
}

/// One step, from `version` to `version + 1`.
fn step(
    event_type: &str,
    version: i32,
    mut fields: Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    match (event_type, version) {
        // ShareCreated v1 → v2: `public: bool` became `visibility`, and `max_views` (our
        // extension) arrived. Links created before it existed were unlimited.
        ("ShareCreated", 1) => {
            let public = match fields.remove("public") {
                Some(Value::Bool(b)) => b,
                None => false,
                Some(other) => return Err(format!("v1 field `public` is {other}, not a boolean")),
            };
            let visibility = if public { "public" } else { "link_only" };
            fields.insert("visibility".to_owned(), Value::from(visibility));
            fields.entry("max_views").or_insert(Value::Null);
            Ok(fields)
        }
        _ => Err(format!("no upcast step from schema version {version}")),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use crate::event::{ShareCreated, TargetType, Visibility};
    use crate::{MusicEvent, RecordedEvent, StreamId};

    use super::*;

    fn recorded(event_type: &str, schema_version: i32, payload: Value) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::now_v7(),
            stream_id: StreamId::new("share-mslink_8c4e2a9f1b73"),
            stream_version: 1,
            global_position: 1,
            event_type: event_type.to_owned(),
            schema_version,
            occurred_at: Utc.with_ymd_and_hms(2026, 6, 28, 10, 30, 0).unwrap(),
            actor: "usr_0123456789ab".to_owned(),
            trace_id: "req_abc123xyz0000000".to_owned(),
            payload,
        }
    }

    fn v1_share(public: bool) -> Value {
        json!({
            "share_id": "mslink_8c4e2a9f1b73",
            "token_hash": "ab".repeat(32),
            "target_type": "collection",
            "target_id": "mcoll_5e8a1d3f9c27",
            "organization_id": "org_abc123",
            "owner_id": "usr_0123456789ab",
            "public": public,
            "expires_at": null
        })
    }

    #[test]
    fn share_created_v1_is_upcast_to_v2() {
        let event = recorded("ShareCreated", 1, v1_share(true))
            .decode()
            .expect("v1 decodes");
        let MusicEvent::ShareCreated(ShareCreated {
            visibility,
            max_views,
            target_type,
            ..
        }) = event
        else {
            panic!("wrong variant: {event:?}")
        };
        assert_eq!(visibility, Visibility::Public);
        assert_eq!(max_views, None);
        assert_eq!(target_type, TargetType::Collection);

        let private = recorded("ShareCreated", 1, v1_share(false))
            .decode()
            .expect("v1 decodes");
        assert!(matches!(
            private,
            MusicEvent::ShareCreated(ShareCreated {
                visibility: Visibility::LinkOnly,
                ..
            })
        ));
    }

    #[test]
    fn upcast_envelope_carries_current_version_and_shape() {
        let up = recorded("ShareCreated", 1, v1_share(false))
            .upcast()
            .expect("upcasts");
        assert_eq!(up.schema_version, 2);
        assert_eq!(up.payload["visibility"], "link_only");
        assert!(up.payload.get("public").is_none());
    }

    #[test]
    fn bad_payloads_name_the_event() {
        let bad = recorded("ShareCreated", 2, json!({"share_id": 7}));
        let err = bad.decode().expect_err("malformed");
        let text = err.to_string();
        assert!(
            text.contains(&bad.event_id.to_string()) && text.contains("ShareCreated"),
            "{text}"
        );

        let unknown = recorded("TrackRemixed", 1, json!({}));
        let text = unknown.decode().expect_err("unknown").to_string();
        assert!(
            text.contains(&unknown.event_id.to_string()) && text.contains("TrackRemixed"),
            "{text}"
        );

        let future = recorded(
            "ShareRevoked",
            9,
            json!({"share_id": "mslink_8c4e2a9f1b73"}),
        );
        assert!(matches!(
            future.decode(),
            Err(DecodeError::UnsupportedVersion {
                schema_version: 9,
                ..
            })
        ));

        let not_object = recorded("ShareRevoked", 1, json!([1, 2]));
        assert!(matches!(
            not_object.decode(),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
