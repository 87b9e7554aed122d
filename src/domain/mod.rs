//! Types and rules of the service. Knows neither HTTP nor SQL.
//!
//! A state is an enum ([`named_enum!`]): its names are written once, next to its variants, and a
//! stored name that is none of them is refused where the row is read ([`UnknownName`]), not
//! compared as a string anywhere else.

/// An enum whose variants each have one name, the one stored (and, unless serde says otherwise,
/// the one on the wire): `as_str`, `ALL`, `Display`, and `TryFrom<String>`/`FromStr` that refuse
/// any other name with [`UnknownName`].
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::domain::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::domain::UnknownName::new($what, s))
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::domain::UnknownName;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
    };
}

pub mod audience;
pub mod clock;
pub mod control;
pub mod cursor;
pub mod external;
pub mod identity;
pub mod job;
pub mod landing;
pub mod lifecycle;
pub mod limits;
pub mod listing;
pub mod patch;
pub mod run;

pub use identity::{Caller, Sandbox, Tenant};

/// A name read back from the store that is not one of its enum's: a fault of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    pub what: &'static str,
    /// The name found, clipped.
    pub found: String,
}

impl UnknownName {
    pub fn new(what: &'static str, found: &str) -> Self {
        UnknownName {
            what,
            found: found.chars().take(64).collect(),
        }
    }
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}' is not a {}", self.found, self.what)
    }
}

impl std::error::Error for UnknownName {}
