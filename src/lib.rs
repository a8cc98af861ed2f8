//! pvc-clone-guard: a validating admission webhook that refuses PersistentVolumeClaim
//! clones the CSI provisioner would leave Pending forever.
//!
//! Data flows one way: `server` (HTTP/TLS) -> `review` (parse the AdmissionReview) ->
//! `facts` (gather what the rules read from the cluster) -> `rules` (pure decision) ->
//! `review` (verdict to AdmissionResponse).

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
