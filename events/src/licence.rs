//! The licence catalogue: the only source of licence facts.
//!
//! A client names a `licence_class`; what that class permits is decided here, under a catalogue
//! version, and never taken from the client. Events record the class and the version, so a track
//! keeps the facts it was imported under even after a later catalogue changes them.

use serde::{Deserialize, Serialize};

/// The catalogue version new imports are recorded under.
pub const CURRENT_VERSION: &str = "2026-01";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LicenceClass {
    CommercialCleared,
    CommercialEnterprise,
    PersonalOnly,
    Unclear,
}

impl LicenceClass {
    pub const ALL: [LicenceClass; 4] = [
        LicenceClass::CommercialCleared,
        LicenceClass::CommercialEnterprise,
        LicenceClass::PersonalOnly,
        LicenceClass::Unclear,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LicenceClass::CommercialCleared => "commercial_cleared",
            LicenceClass::CommercialEnterprise => "commercial_enterprise",
            LicenceClass::PersonalOnly => "personal_only",
            LicenceClass::Unclear => "unclear",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// What a licence class permits, under one catalogue version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenceFacts {
    pub licence_class: LicenceClass,
    pub licence_version: String,
    pub commercial_use: bool,
    pub requires_attribution: bool,
}

/// The facts for `class` under catalogue `version`, or `None` for a version this build does not
/// know (a newer producer): callers must not guess, since overstating a licence is the one thing
/// the product promises never to do.
pub fn facts(class: LicenceClass, version: &str) -> Option<LicenceFacts> {
    let (commercial_use, requires_attribution) = match version {
        "2026-01" => match class {
            LicenceClass::CommercialCleared => (true, false),
            LicenceClass::CommercialEnterprise => (true, true),
            LicenceClass::PersonalOnly => (false, false),
            LicenceClass::Unclear => (false, false),
        },
        _ => return None,
    };
    Some(LicenceFacts {
        licence_class: class,
        licence_version: version.to_owned(),
        commercial_use,
        requires_attribution,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_2026_01_matches_the_contract() {
        let table = [
            ("commercial_cleared", true, false),
            ("commercial_enterprise", true, true),
            ("personal_only", false, false),
            ("unclear", false, false),
        ];
        for (name, commercial, attribution) in table {
            let class = LicenceClass::parse(name).expect(name);
            let f = facts(class, CURRENT_VERSION).expect("current version is known");
            assert_eq!(
                (f.commercial_use, f.requires_attribution),
                (commercial, attribution),
                "{name}"
            );
        }
        assert!(facts(LicenceClass::Unclear, "1999-01").is_none());
    }
}
