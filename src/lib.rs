//! A persistent reference server for Adobe Experience Platform's audience APIs.

pub mod api;
pub mod auth;
pub mod config;
pub mod domain;
pub mod embedded_pg;
pub mod error;
pub mod landing;
pub mod monitoring;
pub mod openapi;
pub mod service;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod worker;
