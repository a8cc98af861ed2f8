//! pvc-clone-guard: a validating admission webhook that refuses PersistentVolumeClaim
//! clones the CSI provisioner would leave Pending forever.
//!
//! Data flows one way: `listener` (TLS, limits, drain) -> `server` (one axum router,
//! `POST /validate` handed straight to its handler) -> `review` (parse the AdmissionReview, triage, judge) -> `facts`
//! (gather what the rules read from the cluster) -> `rules` (pure decision) -> `review`
//! (verdict to AdmissionResponse).
//!
//! [`Webhook::new_from_config`] builds the webhook from a config and a client;
//! [`Webhook::service`] is what production serves and the contract tests drive.

pub mod certs;
pub mod cli;
pub mod config;
pub mod facts;
pub mod lenient;
pub mod listener;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod offline;
pub mod quantity;
pub mod review;
pub mod rules;
pub mod server;
pub mod tls;

pub use server::{Webhook, WebhookConfig};
