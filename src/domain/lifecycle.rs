//! Audience lifecycle states and the transitions between them.

use std::fmt;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Draft,
    Published,
    Inactive,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Draft => "draft",
            Lifecycle::Published => "published",
            Lifecycle::Inactive => "inactive",
        }
    }

    /// The state [`Lifecycle::as_str`] names, and nothing else: how a stored state is read back.
    pub fn from_name(name: &str) -> Option<Self> {
        [Lifecycle::Draft, Lifecycle::Published, Lifecycle::Inactive]
            .into_iter()
            .find(|state| state.as_str() == name)
    }

    /// Reads a client value. `active` is the older name of `published`; `deleted` and `archived`
    /// exist in the real service but are reached only through DELETE, never set by a client.
    pub fn parse(value: &str) -> Result<Self, ApiError> {
        if let Some(state) = Self::from_name(value) {
            return Ok(state);
        }
        match value {
            "active" => Ok(Lifecycle::Published),
            "deleted" | "archived" => Err(ApiError::invalid(format!(
                "Field 'lifecycleState' cannot be set to '{value}': delete the audience with DELETE instead."
            ))),
            other => Err(ApiError::invalid(format!(
                "Field 'lifecycleState' has an unknown value '{other}': use draft, published or inactive."
            ))),
        }
    }

    /// Whether an audience may move from `self` to `to`. Staying in a state is always allowed.
    pub fn check_transition(self, to: Lifecycle) -> Result<(), ApiError> {
        use Lifecycle::*;
        match (self, to) {
            (a, b) if a == b => Ok(()),
            (Draft, Published) | (Published, Inactive) | (Inactive, Published) => Ok(()),
            (from, to) => Err(ApiError::invalid(format!(
                "Field 'lifecycleState' cannot change from '{from}' to '{to}': allowed are draft->published, published->inactive and inactive->published."
            ))),
        }
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Lifecycle::{self, *};

    #[test]
    fn active_is_read_as_published() {
        assert_eq!(Lifecycle::parse("active").unwrap(), Published);
    }

    #[test]
    fn stored_names_read_back_exactly() {
        for state in [Draft, Published, Inactive] {
            assert_eq!(Lifecycle::from_name(state.as_str()), Some(state));
        }
        for name in ["active", "Published", "", "deleted"] {
            assert_eq!(Lifecycle::from_name(name), None, "{name}");
        }
    }

    #[test]
    fn deleted_and_archived_and_unknown_are_refused() {
        for v in ["deleted", "archived", "enabled", ""] {
            assert!(Lifecycle::parse(v).is_err(), "{v}");
        }
    }

    #[test]
    fn transitions_follow_the_contract() {
        let allowed = [
            (Draft, Published),
            (Published, Inactive),
            (Inactive, Published),
            (Draft, Draft),
            (Published, Published),
            (Inactive, Inactive),
        ];
        for from in [Draft, Published, Inactive] {
            for to in [Draft, Published, Inactive] {
                let ok = from.check_transition(to).is_ok();
                assert_eq!(ok, allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }
}
