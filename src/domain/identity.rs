//! Who is calling and in which tenant.

use std::sync::Arc;

use serde_json::{json, Value};
use uuid::Uuid;

/// A sandbox as the API shows it. Registered on first use with a stable id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub sandbox_id: Uuid,
    pub name: String,
    pub sandbox_type: String,
    pub is_default: bool,
}

impl Sandbox {
    /// The type and default flag a sandbox gets when it is first seen: `prod` is the production
    /// default sandbox, every other name a development one.
    pub fn kind_for(name: &str) -> (&'static str, bool) {
        if name == "prod" {
            ("production", true)
        } else {
            ("development", false)
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "sandboxId": self.sandbox_id,
            "sandboxName": self.name,
            "type": self.sandbox_type,
            "default": self.is_default,
        })
    }
}

/// The (org, sandbox) every resource belongs to. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tenant(pub Arc<TenantInner>);

#[derive(Debug)]
pub struct TenantInner {
    pub org_id: String,
    pub sandbox: Sandbox,
}

impl Tenant {
    pub fn new(org_id: String, sandbox: Sandbox) -> Self {
        Tenant(Arc::new(TenantInner { org_id, sandbox }))
    }
    pub fn org_id(&self) -> &str {
        &self.0.org_id
    }
    pub fn sandbox(&self) -> &Sandbox {
        &self.0.sandbox
    }
    pub fn sandbox_id(&self) -> Uuid {
        self.0.sandbox.sandbox_id
    }
}

/// The identity a request acts as, taken from its bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
}
